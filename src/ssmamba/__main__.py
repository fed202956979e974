from ssmamba.cli import main

main()

// Weight gradient of a depthwise 2D convolution on CPU (stride 1, 'same' padding, odd square kernel).
//
//   grad_weight[c, 0, i, j] = sum_{b, y, x} grad_out[b, c, y, x] * input[b, c, y + i - K/2, x + j - K/2]
//
// oneDNN computes this 5-70x slower than the convolution's own forward for 7x7 kernels on the small token grids of
// SSMamba's state-space stages (benchmarks/results/depthwise.md): 11 ms for batch 16 x 192 channels x 14 x 14, where
// this loop takes 2 ms. It reads both tensors channels-last, so the innermost loop runs over contiguous channels
// (vectorised by the compiler), and each thread sums a share of the batch into its own buffer, added up at the end.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

namespace {

template <typename T>
void accumulate_taps(const T* __restrict input, const T* __restrict grad_out, T* __restrict grad_weight,
                     int64_t batch_begin, int64_t batch_end, int64_t height, int64_t width, int64_t channels,
                     int64_t kernel) {
  const int64_t pad = kernel / 2;
  for (int64_t b = batch_begin; b < batch_end; ++b) {
    for (int64_t y = 0; y < height; ++y) {
      for (int64_t x = 0; x < width; ++x) {
        const T* g = grad_out + ((b * height + y) * width + x) * channels;
        // the taps whose input pixel is inside the grid (the rest only ever meet padding zeros)
        const int64_t i_begin = std::max<int64_t>(0, pad - y), i_end = std::min(kernel, height + pad - y);
        const int64_t j_begin = std::max<int64_t>(0, pad - x), j_end = std::min(kernel, width + pad - x);
        for (int64_t i = i_begin; i < i_end; ++i) {
          for (int64_t j = j_begin; j < j_end; ++j) {
            const T* in = input + ((b * height + y + i - pad) * width + x + j - pad) * channels;
            T* out = grad_weight + (i * kernel + j) * channels;
#pragma GCC ivdep
            for (int64_t c = 0; c < channels; ++c) out[c] += g[c] * in[c];
          }
        }
      }
    }
  }
}

}  // namespace

// input, grad_out: (batch, channels, height, width) in any memory format; returns (channels, 1, kernel, kernel).
at::Tensor depthwise_weight_grad(const at::Tensor& input, const at::Tensor& grad_out, int64_t kernel) {
  TORCH_CHECK(input.dim() == 4 && grad_out.sizes() == input.sizes(), "depthwise_weight_grad: input and grad_out "
              "must have the same (batch, channels, height, width) shape");
  TORCH_CHECK(kernel % 2 == 1 && kernel > 0, "depthwise_weight_grad: the kernel size must be odd");
  TORCH_CHECK(input.scalar_type() == grad_out.scalar_type(), "depthwise_weight_grad: one dtype for both tensors");
  const int64_t batch = input.size(0), channels = input.size(1), height = input.size(2), width = input.size(3);
  const at::Tensor in = input.permute({0, 2, 3, 1}).contiguous();  // no copy when already channels-last
  const at::Tensor g = grad_out.permute({0, 2, 3, 1}).contiguous();
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), batch));
  at::Tensor partial = at::zeros({threads, kernel * kernel, channels}, input.options());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "depthwise_weight_grad", [&] {
    const scalar_t* in_ptr = in.data_ptr<scalar_t>();
    const scalar_t* g_ptr = g.data_ptr<scalar_t>();
    scalar_t* partial_ptr = partial.data_ptr<scalar_t>();
    const int64_t per_thread = (batch + threads - 1) / threads;
    at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        accumulate_taps(in_ptr, g_ptr, partial_ptr + t * kernel * kernel * channels, t * per_thread,
                        std::min(batch, (t + 1) * per_thread), height, width, channels, kernel);
      }
    });
  });
  return partial.sum(0).t().reshape({channels, 1, kernel, kernel});
}

// SIMD packs shared by ssmamba's CPU kernels (selective_scan_cpu.cpp, depthwise_cpu.cpp): GCC/Clang vector
// extensions, unaligned loads and stores, bfloat16 <-> float32 packs, and a float exp.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

#include <c10/util/BFloat16.h>

#if !defined(__GNUC__) && !defined(__clang__)
#error "ssmamba's CPU kernels use GCC/Clang vector extensions; build them with g++ or clang++"
#endif

namespace ssmamba_simd {
// ---------------------------------------------------------------------------------------------------------------
// Packs of values: explicit SIMD through vector extensions, so that speed does not hang on whether the
// auto-vectoriser accepts a loop. Two widths:
// - kLanes, the directional kernel's (channels per pack): 16 floats = one AVX-512 register, else 8 = one AVX2
//   register. AVX-512 packs pay even where they execute as two 256-bit halves (AMD Zen 4): the directional forward
//   runs 1.4-1.8x as fast as with 8 lanes there, with half the instructions per step.
// - kRowLanes = 8, the row kernel's (states per pack, N padded to it): wider packs would pad small N further and
//   leave one dependency chain per row at N = 16 (0.66x at N = 4, 0.9x at N = 16 with 16 lanes).
// The compiler splits packs wider than the target's registers.
#if defined(__AVX512F__)
constexpr int64_t kLanes = 16;
#else
constexpr int64_t kLanes = 8;
#endif
constexpr int64_t kRowLanes = 8;

template <typename T, int64_t W>
struct VecOf;
#define SSMAMBA_VECTOR(T, W) \
  template <>                \
  struct VecOf<T, W> {       \
    typedef T type __attribute__((vector_size(W * sizeof(T))));  \
  };
SSMAMBA_VECTOR(float, 4)
SSMAMBA_VECTOR(float, 8)
SSMAMBA_VECTOR(float, 16)
SSMAMBA_VECTOR(double, 4)
SSMAMBA_VECTOR(double, 8)
SSMAMBA_VECTOR(double, 16)
SSMAMBA_VECTOR(int32_t, 8)
SSMAMBA_VECTOR(int32_t, 16)
SSMAMBA_VECTOR(uint16_t, 8)
SSMAMBA_VECTOR(uint16_t, 16)
#undef SSMAMBA_VECTOR

template <typename T, int64_t W = kLanes>
using Pack = typename VecOf<T, W>::type;
template <typename T>
using RowPack = Pack<T, kRowLanes>;
template <typename V>
using Elem = std::remove_cv_t<std::remove_reference_t<decltype(std::declval<V>()[0])>>;
template <typename V>
constexpr int64_t kWidth = static_cast<int64_t>(sizeof(V) / sizeof(Elem<V>));
template <typename V>
using Half = Pack<Elem<V>, kWidth<V> / 2>;  // the lower lanes of V

template <typename T, int64_t W = kLanes>
inline Pack<T, W> load(const T* p) { Pack<T, W> v; std::memcpy(&v, p, sizeof v); return v; }  // unaligned
template <typename V>
inline void store(Elem<V>* p, const V& v) { std::memcpy(p, &v, sizeof v); }

// The first n <= W values, zeros after: the last pack of a row whose length is not a multiple of W.
template <typename T, int64_t W = kLanes>
inline Pack<T, W> load_first(const T* p, int64_t n) {
  if (n == W) return load<T, W>(p);
  T lanes[W] = {};
  std::copy(p, p + n, lanes);
  return load<T, W>(lanes);
}

template <typename V>
inline void store_first(Elem<V>* p, const V& v, int64_t n) {
  if (n == kWidth<V>) return store(p, v);
  Elem<V> lanes[kWidth<V>];
  store(lanes, v);
  std::copy(lanes, lanes + n, p);
}

// The upper half of v's lanes added onto the lower half. Lane shuffles where the compiler has them (clang, GCC 12+):
// with copies through memory GCC spilled the register to the stack and reloaded its halves, a store-forwarding
// stall in the scan backward's innermost loop.
#if defined(__clang__) || __GNUC__ >= 12
template <typename V, std::size_t... I>
inline Half<V> fold_lanes(const V& v, std::index_sequence<I...>) {
  return __builtin_shufflevector(v, v, I...) + __builtin_shufflevector(v, v, (I + sizeof...(I))...);
}

template <typename V>
inline Half<V> fold(const V& v) {
  return fold_lanes(v, std::make_index_sequence<static_cast<std::size_t>(kWidth<V> / 2)>{});
}
#else
template <typename V>
inline Half<V> fold(const V& v) {
  Half<V> low, high;
  std::memcpy(&low, &v, sizeof low);
  std::memcpy(&high, reinterpret_cast<const char*>(&v) + sizeof low, sizeof high);
  return low + high;
}
#endif

template <typename V>
inline Elem<V> horizontal_sum(const V& v) {
  if constexpr (kWidth<V> == 4) {
    return (v[0] + v[2]) + (v[1] + v[3]);
  } else {
    return horizontal_sum(fold(v));
  }
}

// float64 is for gradcheck and for users who ask for it: exactness over speed, one libm call per lane.
template <typename V, typename F>
inline V per_lane(V x, F f) {
  for (int64_t i = 0; i < kWidth<V>; ++i) x[i] = f(x[i]);
  return x;
}

// exp of a float pack. Range reduction x = k ln2 + r, |r| <= ln2 / 2, then a degree-7 polynomial for e^r (max
// error about 1 ulp). Below kLowest the result is 0 (a fully forgotten state); above kHighest it is +inf.
template <typename V>
inline V exp_pack(V x) {
  if constexpr (std::is_same_v<Elem<V>, double>) {
    return per_lane(x, [](double v) { return std::exp(v); });
  } else {
    constexpr float kLowest = -87.0f, kHighest = 88.0f;
    constexpr float kLog2e = 1.44269504088896341f;
    constexpr float kLn2Hi = 0.693359375f;  // ln 2 split in two so that k * kLn2Hi is exact
    constexpr float kLn2Lo = -2.12194440e-4f;
    constexpr float kRoundingShift = 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to an integer
    const V zero = {};
    V xc = x < kLowest ? zero + kLowest : x;
    xc = xc > kHighest ? zero + kHighest : xc;
    const V k = (xc * kLog2e + kRoundingShift) - kRoundingShift;
    const V r = (xc - k * kLn2Hi) - k * kLn2Lo;
    V p = zero + 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    using Ints = Pack<int32_t, kWidth<V>>;
    const Ints exponent_bits = (__builtin_convertvector(k, Ints) + 127) << 23;  // 2^k, k in [-126, 127]
    const V result = p * reinterpret_cast<const V&>(exponent_bits);
    const V bounded = x > kHighest ? zero + std::numeric_limits<float>::infinity() : result;
    return x < kLowest ? zero : bounded;  // NaN fails both tests and propagates through p
  }
}

// bfloat16 is the upper half of a float32: widening is a shift, exact.
template <int64_t W = kLanes>
inline Pack<float, W> widen_bfloat16(const uint16_t* p) {
  const Pack<uint16_t, W> raw = load<uint16_t, W>(p);
  const Pack<int32_t, W> bits = __builtin_convertvector(raw, Pack<int32_t, W>) << 16;
  Pack<float, W> v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

// float32 -> bfloat16 rounded to nearest even, NaN kept NaN: c10::BFloat16's rounding, a pack at a time.
template <int64_t W = kLanes>
inline void narrow_bfloat16(uint16_t* p, const Pack<float, W>& v) {
  Pack<int32_t, W> bits;
  std::memcpy(&bits, &v, sizeof bits);
  const Pack<int32_t, W> odd = (bits >> 16) & 1;  // the lowest kept bit: ties go to even
  const Pack<int32_t, W> rounded = (bits + 0x7FFF + odd) >> 16;
  const Pack<int32_t, W> out = v != v ? Pack<int32_t, W>{} + 0x7FC0 : rounded;
  store(p, __builtin_convertvector(out, Pack<uint16_t, W>));
}

// The compute type of a storage type: float for float and bfloat16, double for double; S's packs load and store
// as packs of it.
template <typename S>
struct ComputeOf { using type = float; };
template <>
struct ComputeOf<double> { using type = double; };
template <typename S>
using Compute = typename ComputeOf<S>::type;

// The values at p, p + stride, ... of n <= kLanes channels, zeros after.
template <typename S>
inline Pack<Compute<S>> load_lanes(const S* p, int64_t stride, int64_t n) {
  using T = Compute<S>;
  if (stride == 1 && n == kLanes) {
    if constexpr (std::is_same_v<S, T>) {
      return load(p);
    } else {  // bfloat16
      return widen_bfloat16(reinterpret_cast<const uint16_t*>(p));
    }
  }
  Pack<T> v = {};
  for (int64_t i = 0; i < n; ++i) v[i] = static_cast<T>(p[i * stride]);
  return v;
}

template <typename S>
inline void store_lanes(S* p, int64_t stride, const Pack<Compute<S>>& v, int64_t n) {
  if (stride == 1 && n == kLanes) {
    if constexpr (std::is_same_v<S, Compute<S>>) return store(p, v);
    if constexpr (std::is_same_v<S, c10::BFloat16>) return narrow_bfloat16(reinterpret_cast<uint16_t*>(p), v);
  }
  for (int64_t i = 0; i < n; ++i) p[i * stride] = static_cast<S>(v[i]);  // bfloat16: round to nearest even
}

}  // namespace ssmamba_simd

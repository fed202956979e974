// Depthwise 2D convolution on CPU (stride 1, 'same' padding, odd square kernel K), channels-last: forward and the
// weight gradient; the input gradient is the forward with the kernel flipped.
//
//   out[b, c, y, x]        = bias[c] + sum_{i, j} weight[c, 0, i, j] * input[b, c, y + i - K/2, x + j - K/2]
//   grad_weight[c, 0, i, j] = sum_{b, y, x} grad_out[b, c, y, x] * input[b, c, y + i - K/2, x + j - K/2]
//
// Why not oneDNN's (benchmarks/results/depthwise.md): its weight gradient is 5-70x slower than its forward for 7x7
// kernels on the small token grids of SSMamba's state-space stages, and its bfloat16 kernels are slower than its
// float32 ones, so under autocast the convolution needed casts both ways. Here every tensor is read channels-last
// in its own storage type (float32, bfloat16 or float64) and computed in float32 (float64 for float64), one pack of
// channels at a time, and only the taps that can be non-zero are visited: `radii` gives each channel's kernel
// radius inside K (MultiKernelDepthwiseConv pads its 3x3 and 5x5 kernels to 7x7; for (3, 5, 7) that is 0.57x the
// taps), and rows of taps above or below the grid are skipped (along a row, a zero-padded copy of the input
// spares the border tests).
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <cstdint>
#include <optional>
#include <type_traits>
#include <vector>

#include "simd.h"

namespace {

using namespace ssmamba_simd;

constexpr int64_t kMaxRadius = 5;  // kernels up to 11 x 11 (ssmamba.ops.depthwise sends larger ones to oneDNN)

// One call's geometry: a (batch, H, W, C) grid, channel packs of kLanes, and each pack's radius (its channels'
// largest).
struct Grid {
  int64_t batch, height, width, channels, kernel;
  std::vector<int64_t> pack_radius;
  std::vector<int64_t> channel_radius;  // empty without radii: every channel reaches K / 2

  int64_t packs() const { return static_cast<int64_t>(pack_radius.size()); }
  int64_t at(int64_t b, int64_t y, int64_t x) const { return ((b * height + y) * width + x) * channels; }
  int64_t tap(int64_t i, int64_t j) const { return (i + kernel / 2) * kernel + j + kernel / 2; }  // i, j from centre
};

Grid make_grid(const at::Tensor& input, int64_t kernel, const std::optional<at::Tensor>& radii) {
  TORCH_CHECK(kernel % 2 == 1 && kernel / 2 <= kMaxRadius, "depthwise: odd kernels up to 11 x 11 are supported");
  Grid g{input.size(0), input.size(2), input.size(3), input.size(1), kernel, {}, {}};
  const int64_t packs = (g.channels + kLanes - 1) / kLanes;
  g.pack_radius.assign(packs, kernel / 2);
  if (radii) {
    TORCH_CHECK(radii->dim() == 1 && radii->size(0) == g.channels && radii->scalar_type() == at::kLong,
                "depthwise: radii must be an int64 tensor of one radius per channel");
    const at::Tensor r = radii->contiguous();
    const int64_t* rp = r.const_data_ptr<int64_t>();
    g.channel_radius.assign(rp, rp + g.channels);
    for (int64_t p = 0; p < packs; ++p) {
      const int64_t end = std::min(g.channels, (p + 1) * kLanes);
      const int64_t largest = *std::max_element(rp + p * kLanes, rp + end);
      TORCH_CHECK(largest >= 0 && largest <= kernel / 2, "depthwise: a radius is outside the kernel");
      g.pack_radius[p] = largest;
    }
  }
  return g;
}

// f(std::integral_constant<int64_t, r>{}): the kernels take a pack's radius as a compile-time constant, so that a
// row of taps unrolls.
template <typename F>
void with_radius(int64_t r, F&& f) {
  switch (r) {
    case 0: return f(std::integral_constant<int64_t, 0>{});
    case 1: return f(std::integral_constant<int64_t, 1>{});
    case 2: return f(std::integral_constant<int64_t, 2>{});
    case 3: return f(std::integral_constant<int64_t, 3>{});
    case 4: return f(std::integral_constant<int64_t, 4>{});
    case 5: return f(std::integral_constant<int64_t, 5>{});
    default: TORCH_CHECK(false, "depthwise: a radius above ", kMaxRadius);
  }
}

// Copies the (H, W) plane of batch element b, channel pack p into `pad` in the compute type, each row with `border`
// zeros on its left and `border + slack` on its right; returns the row stride. (No rows of zeros above and below:
// the callers skip the rows of taps that fall outside the grid.)
template <typename S>
int64_t pad_plane(const Grid& g, const S* in, int64_t b, int64_t p, int64_t border, int64_t slack,
                  std::vector<Pack<Compute<S>>>& pad) {
  const int64_t c0 = p * kLanes, lanes = std::min(kLanes, g.channels - c0);
  const int64_t stride = g.width + 2 * border + slack;
  pad.resize(g.height * stride);
  for (int64_t y = 0; y < g.height; ++y) {
    Pack<Compute<S>>* row = pad.data() + y * stride;
    std::fill(row, row + border, Pack<Compute<S>>{});
    for (int64_t x = 0; x < g.width; ++x) row[border + x] = load_lanes(in + g.at(b, y, x) + c0, 1, lanes);
    std::fill(row + border + g.width, row + stride, Pack<Compute<S>>{});
  }
  return stride;
}

// out for batch element b and channel pack p. The pack's (H, W) plane is first copied, in the compute type, into
// `pad` with zeros left and right of each row (its radius, and a block's width more on the right), so that the sums
// need no border tests and each value is widened from bfloat16 once. Then kBlock neighbouring outputs of a row are
// computed at once: kBlock independent sums in registers (one output at a time would be a chain of up to K * K
// dependent FMAs) sharing each tap's weights; R, the pack's radius, is a compile-time constant so that the loop over
// a row of taps unrolls and each loaded input serves every tap that reads it. Rows of taps that lie wholly outside
// the grid are skipped.
template <int64_t R, int64_t kBlock, typename S>
void forward_plane(const Grid& g, const S* in, const Compute<S>* w, const Compute<S>* bias, S* out, int64_t b,
                   int64_t p, std::vector<Pack<Compute<S>>>& pad) {
  using T = Compute<S>;
  constexpr int64_t r = R, side = 2 * R + 1;
  const int64_t c0 = p * kLanes, lanes = std::min(kLanes, g.channels - c0);
  const int64_t stride = pad_plane(g, in, b, p, r, kBlock, pad);
  const Pack<T> start = bias ? load_lanes(bias + c0, 1, lanes) : Pack<T>{};
  Pack<T> weights[side * side];  // the pack's taps, row by row
  for (int64_t i = -r; i <= r; ++i) {
    for (int64_t j = -r; j <= r; ++j) {
      weights[(i + r) * side + j + r] = load_lanes(w + g.tap(i, j) * g.channels + c0, 1, lanes);
    }
  }
  for (int64_t y = 0; y < g.height; ++y) {
    const int64_t i_begin = std::max(-r, -y), i_end = std::min(r, g.height - 1 - y);
    for (int64_t x0 = 0; x0 < g.width; x0 += kBlock) {
      Pack<T> acc[kBlock];
#pragma GCC unroll 8
      for (int64_t u = 0; u < kBlock; ++u) acc[u] = start;
      for (int64_t i = i_begin; i <= i_end; ++i) {
        const Pack<T>* src = pad.data() + (y + i) * stride + x0;
        const Pack<T>* taps = weights + (i + r) * side;
#pragma GCC unroll 11
        for (int64_t j = 0; j < side; ++j) {
          const Pack<T> weight = taps[j];
#pragma GCC unroll 8
          for (int64_t u = 0; u < kBlock; ++u) acc[u] += weight * src[u + j];
        }
      }
      const int64_t outputs = std::min(kBlock, g.width - x0);
      for (int64_t u = 0; u < outputs; ++u) store_lanes(out + g.at(b, y, x0 + u) + c0, 1, acc[u], lanes);
    }
  }
}

// The block no wider than the row (no sums wasted on padding) and the pack's radius, as compile-time constants.
template <int64_t R, typename S>
void forward_plane_of_width(const Grid& g, const S* in, const Compute<S>* w, const Compute<S>* bias, S* out,
                            int64_t b, int64_t p, std::vector<Pack<Compute<S>>>& pad) {
  if (g.width <= 2) {
    forward_plane<R, 2>(g, in, w, bias, out, b, p, pad);
  } else if (g.width <= 4) {
    forward_plane<R, 4>(g, in, w, bias, out, b, p, pad);
  } else {
    forward_plane<R, 8>(g, in, w, bias, out, b, p, pad);
  }
}

template <typename S>
void forward_units(const Grid& g, const S* in, const Compute<S>* w, const Compute<S>* bias, S* out, int64_t begin,
                   int64_t end) {
  std::vector<Pack<Compute<S>>> pad;
  for (int64_t unit = begin; unit < end; ++unit) {  // unit = (b, p)
    const int64_t b = unit / g.packs(), p = unit % g.packs();
    with_radius(g.pack_radius[p], [&](auto radius) {
      forward_plane_of_width<decltype(radius)::value>(g, in, w, bias, out, b, p, pad);
    });
  }
}

// grad_weight's taps for channel pack p: sums over the batch of dy * the input shifted by each tap. For one row of
// taps (fixed i) the 2R + 1 sums stay in registers along an image row (2R + 1 independent chains, each input value
// read from the padded plane, widened once); rows of taps are skipped where they lie wholly in the padding.
template <int64_t R, typename S>
void weight_grad_pack(const Grid& g, const S* in, const S* grad_out, Compute<S>* sums, int64_t p,
                      std::vector<Pack<Compute<S>>>& pad) {
  using T = Compute<S>;
  constexpr int64_t kTaps = 2 * R + 1;
  const int64_t c0 = p * kLanes, lanes = std::min(kLanes, g.channels - c0);
  std::vector<Pack<T>> total(kTaps * kTaps, Pack<T>{});
  for (int64_t b = 0; b < g.batch; ++b) {
    const int64_t stride = pad_plane(g, in, b, p, R, 0, pad);
    for (int64_t y = 0; y < g.height; ++y) {
      const S* dy_row = grad_out + g.at(b, y, 0) + c0;
      for (int64_t i = std::max(-R, -y); i <= std::min(R, g.height - 1 - y); ++i) {
        const Pack<T>* src = pad.data() + (y + i) * stride + R;
        Pack<T> acc[kTaps] = {};
        for (int64_t x = 0; x < g.width; ++x) {
          const Pack<T> dy = load_lanes(dy_row + x * g.channels, 1, lanes);
#pragma GCC unroll 11
          for (int64_t j = 0; j < kTaps; ++j) acc[j] += dy * src[x + j - R];
        }
        for (int64_t j = 0; j < kTaps; ++j) total[(i + R) * kTaps + j] += acc[j];
      }
    }
  }
  // into the (K * K, C) sums at the centred taps of the K x K kernel; a channel's taps beyond its own radius (a
  // pack's radius is its channels' largest) stay zero
  for (int64_t i = -R; i <= R; ++i) {
    for (int64_t j = -R; j <= R; ++j) {
      Pack<T> sum = total[(i + R) * kTaps + j + R];
      if (!g.channel_radius.empty()) {
        for (int64_t l = 0; l < lanes; ++l) {
          if (std::max(std::abs(i), std::abs(j)) > g.channel_radius[c0 + l]) sum[l] = 0;
        }
      }
      store_lanes(sums + g.tap(i, j) * g.channels + c0, 1, sum, lanes);
    }
  }
}

template <typename S>
void weight_grad_packs(const Grid& g, const S* in, const S* grad_out, Compute<S>* sums, int64_t pack_begin,
                       int64_t pack_end) {
  std::vector<Pack<Compute<S>>> pad;
  for (int64_t p = pack_begin; p < pack_end; ++p) {
    with_radius(g.pack_radius[p], [&](auto radius) {
      weight_grad_pack<decltype(radius)::value>(g, in, grad_out, sums, p, pad);
    });
  }
}

// The storage types: float, bfloat16 (computed in float), double.
template <typename F>
void dispatch_storage(at::ScalarType type, F&& f) {
  if (type == at::kFloat) {
    f(float{});
  } else if (type == at::kBFloat16) {
    f(c10::BFloat16{});
  } else {
    TORCH_CHECK(type == at::kDouble, "depthwise: float32, bfloat16 or float64 input expected, got ", type);
    f(double{});
  }
}

at::ScalarType compute_type(at::ScalarType storage) { return storage == at::kDouble ? at::kDouble : at::kFloat; }

// (batch, channels, height, width) in any memory format -> its (batch, height, width, channels) contiguous data.
at::Tensor channels_last_data(const at::Tensor& t) { return t.permute({0, 2, 3, 1}).contiguous(); }

}  // namespace

// input (batch, C, H, W), any memory format; weight (C, 1, K, K) and bias (C,) in input's compute type; radii (C,)
// int64 or none. Returns (batch, C, H, W) channels-last in input's dtype.
at::Tensor depthwise_forward(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                             const std::optional<at::Tensor>& radii) {
  TORCH_CHECK(input.dim() == 4 && weight.dim() == 4 && weight.size(0) == input.size(1) && weight.size(1) == 1 &&
                  weight.size(2) == weight.size(3) && weight.size(2) % 2 == 1,
              "depthwise_forward: input (batch, C, H, W) and weight (C, 1, K, K) with an odd K expected");
  const auto compute = compute_type(input.scalar_type());
  TORCH_CHECK(weight.scalar_type() == compute && (!bias || (bias->scalar_type() == compute &&
                                                            bias->numel() == input.size(1))),
              "depthwise_forward: weight and bias must be (C,) tensors in the input's compute dtype");
  const Grid g = make_grid(input, weight.size(2), radii);
  const at::Tensor in = channels_last_data(input);
  const at::Tensor w = weight.reshape({g.channels, g.kernel * g.kernel}).t().contiguous();  // (K * K, C)
  const at::Tensor bias_data = bias ? bias->contiguous() : at::Tensor();
  at::Tensor out = at::empty({g.batch, g.height, g.width, g.channels}, input.options());
  dispatch_storage(input.scalar_type(), [&](auto tag) {
    using S = decltype(tag);
    using T = Compute<S>;
    const T* bias_ptr = bias ? bias_data.const_data_ptr<T>() : nullptr;
    at::parallel_for(0, g.batch * g.packs(), 1, [&](int64_t begin, int64_t end) {
      forward_units(g, in.const_data_ptr<S>(), w.const_data_ptr<T>(), bias_ptr, out.data_ptr<S>(), begin, end);
    });
  });
  return out.permute({0, 3, 1, 2});
}

// input, grad_out: (batch, C, H, W) in any memory format, one dtype; radii as for the forward. Returns
// (C, 1, K, K) in the compute type, zero outside each channel's radius.
at::Tensor depthwise_weight_grad(const at::Tensor& input, const at::Tensor& grad_out, int64_t kernel,
                                 const std::optional<at::Tensor>& radii) {
  TORCH_CHECK(input.dim() == 4 && grad_out.sizes() == input.sizes(), "depthwise_weight_grad: input and grad_out "
              "must have the same (batch, channels, height, width) shape");
  TORCH_CHECK(kernel % 2 == 1 && kernel > 0, "depthwise_weight_grad: the kernel size must be odd");
  TORCH_CHECK(input.scalar_type() == grad_out.scalar_type(), "depthwise_weight_grad: one dtype for both tensors");
  const Grid g = make_grid(input, kernel, radii);
  const at::Tensor in = channels_last_data(input);
  const at::Tensor dy = channels_last_data(grad_out);
  at::Tensor sums = at::zeros({kernel * kernel, g.channels}, input.options().dtype(compute_type(input.scalar_type())));
  dispatch_storage(input.scalar_type(), [&](auto tag) {
    using S = decltype(tag);
    at::parallel_for(0, g.packs(), 1, [&](int64_t begin, int64_t end) {
      weight_grad_packs(g, in.const_data_ptr<S>(), dy.const_data_ptr<S>(), sums.data_ptr<Compute<S>>(), begin, end);
    });
  });
  return sums.t().reshape({g.channels, 1, kernel, kernel});
}

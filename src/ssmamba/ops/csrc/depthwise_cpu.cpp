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

// Batch element b's image copied once, pixel by pixel (a pixel's channels are contiguous, so the reads stream), into
// one plane per channel pack in the compute type: `pad`, (packs, H, stride), each row with `border` zeros on its left
// and `border + slack` on its right. Returns the stride.
template <typename S>
int64_t pad_image(const Grid& g, const S* in, int64_t b, int64_t border, int64_t slack,
                  std::vector<Pack<Compute<S>>>& pad) {
  using P = Pack<Compute<S>>;
  const int64_t stride = g.width + 2 * border + slack, plane = g.height * stride;
  pad.resize(g.packs() * plane);
  for (int64_t p = 0; p < g.packs(); ++p) {
    for (int64_t y = 0; y < g.height; ++y) {
      P* row = pad.data() + p * plane + y * stride;
      std::fill(row, row + border, P{});
      std::fill(row + border + g.width, row + stride, P{});
    }
  }
  for (int64_t y = 0; y < g.height; ++y) {
    for (int64_t x = 0; x < g.width; ++x) {
      const S* pixel = in + g.at(b, y, x);
      P* dst = pad.data() + y * stride + border + x;
      for (int64_t p = 0; p < g.packs(); ++p) {
        dst[p * plane] = load_lanes(pixel + p * kLanes, 1, std::min(kLanes, g.channels - p * kLanes));
      }
    }
  }
  return stride;
}

// kBlock neighbouring outputs of row y from x0, one channel pack of radius R: kBlock independent sums in registers
// (one output at a time would be a chain of up to K * K dependent FMAs) sharing each tap's weights; R is a
// compile-time constant, so a row of taps unrolls and each loaded input serves every tap that reads it. `src` is the
// pack's padded plane at column x0 - R of row 0; `weights` its (2R + 1)^2 taps, row by row. Rows of taps outside the
// grid are skipped.
template <int64_t R, int64_t kBlock, typename S>
inline void forward_block(const Grid& g, const Pack<Compute<S>>* src, int64_t stride,
                          const Pack<Compute<S>>* weights, const Pack<Compute<S>>& start, S* out, int64_t y,
                          int64_t outputs, int64_t lanes) {
  using T = Compute<S>;
  constexpr int64_t side = 2 * R + 1;
  Pack<T> acc[kBlock];
#pragma GCC unroll 8
  for (int64_t u = 0; u < kBlock; ++u) acc[u] = start;
  for (int64_t i = std::max(-R, -y); i <= std::min(R, g.height - 1 - y); ++i) {
    const Pack<T>* row = src + (y + i) * stride;
    const Pack<T>* taps = weights + (i + R) * side;
#pragma GCC unroll 11
    for (int64_t j = 0; j < side; ++j) {
      const Pack<T> weight = taps[j];
#pragma GCC unroll 8
      for (int64_t u = 0; u < kBlock; ++u) acc[u] += weight * row[u + j];
    }
  }
  for (int64_t u = 0; u < outputs; ++u) store_lanes(out + u * g.channels, 1, acc[u], lanes);
}

// out for batch element b: its image padded once (border K / 2, a block's width of slack), then, row by row and block
// by block, every channel pack in turn, so that the outputs of a pixel are written one after another. `weights`:
// each pack's taps at `offsets[p]`.
template <int64_t kBlock, typename S>
void forward_image(const Grid& g, const S* in, const std::vector<Pack<Compute<S>>>& weights,
                   const std::vector<int64_t>& offsets, const Compute<S>* bias, S* out, int64_t b,
                   std::vector<Pack<Compute<S>>>& pad) {
  using T = Compute<S>;
  const int64_t border = g.kernel / 2, stride = pad_image(g, in, b, border, kBlock, pad);
  const int64_t plane = g.height * stride;
  for (int64_t y = 0; y < g.height; ++y) {
    for (int64_t x0 = 0; x0 < g.width; x0 += kBlock) {
      const int64_t outputs = std::min(kBlock, g.width - x0);
      for (int64_t p = 0; p < g.packs(); ++p) {
        const int64_t c0 = p * kLanes, lanes = std::min(kLanes, g.channels - c0), r = g.pack_radius[p];
        const Pack<T> start = bias ? load_lanes(bias + c0, 1, lanes) : Pack<T>{};
        const Pack<T>* src = pad.data() + p * plane + border - r + x0;
        with_radius(r, [&](auto radius) {
          forward_block<decltype(radius)::value, kBlock>(g, src, stride, weights.data() + offsets[p], start,
                                                         out + g.at(b, y, x0) + c0, y, outputs, lanes);
        });
      }
    }
  }
}

// The batch elements [begin, end); the block no wider than a row (no sums wasted on padding).
template <typename S>
void forward_images(const Grid& g, const S* in, const std::vector<Pack<Compute<S>>>& weights,
                    const std::vector<int64_t>& offsets, const Compute<S>* bias, S* out, int64_t begin, int64_t end) {
  std::vector<Pack<Compute<S>>> pad;
  for (int64_t b = begin; b < end; ++b) {
    if (g.width <= 2) {
      forward_image<2>(g, in, weights, offsets, bias, out, b, pad);
    } else if (g.width <= 4) {
      forward_image<4>(g, in, weights, offsets, bias, out, b, pad);
    } else {
      forward_image<8>(g, in, weights, offsets, bias, out, b, pad);
    }
  }
}

// Each pack's (2r + 1)^2 taps around the centre, row by row, at offsets[p] of one array of packs: the forward's
// weights, and the weight gradient's sums.
struct TapLayout {
  std::vector<int64_t> offsets;
  int64_t size = 0;

  explicit TapLayout(const Grid& g) : offsets(g.packs()) {
    for (int64_t p = 0; p < g.packs(); ++p) {
      offsets[p] = size;
      size += (2 * g.pack_radius[p] + 1) * (2 * g.pack_radius[p] + 1);
    }
  }
};

// The weight gradient's taps for one channel pack of radius R in one image: `x` is the pack's padded plane at column
// -R of row 0, `dy` its dense (H, W) plane of output gradients; adds into `total`, its (2R + 1)^2 sums. For one row
// of taps (fixed i) the 2R + 1 sums stay in registers along an image row (2R + 1 independent chains); rows of taps
// outside the grid are skipped.
template <int64_t R, typename T>
void weight_grad_block(const Grid& g, const Pack<T>* x, int64_t stride, const Pack<T>* dy, Pack<T>* total) {
  constexpr int64_t side = 2 * R + 1;
  for (int64_t y = 0; y < g.height; ++y) {
    const Pack<T>* dy_row = dy + y * g.width;
    for (int64_t i = std::max(-R, -y); i <= std::min(R, g.height - 1 - y); ++i) {
      const Pack<T>* row = x + (y + i) * stride;
      Pack<T> acc[side] = {};
      for (int64_t u = 0; u < g.width; ++u) {
        const Pack<T> grad = dy_row[u];
#pragma GCC unroll 11
        for (int64_t j = 0; j < side; ++j) acc[j] += grad * row[u + j];
      }
      for (int64_t j = 0; j < side; ++j) total[(i + R) * side + j] += acc[j];
    }
  }
}

// Adds the batch elements [begin, end) into `total` (TapLayout). Each image and its output gradient are copied once,
// pixel by pixel (reads that stream), into planes per channel pack.
template <typename S>
void weight_grad_images(const Grid& g, const S* in, const S* grad_out, const TapLayout& layout,
                        Pack<Compute<S>>* total, int64_t begin, int64_t end) {
  std::vector<Pack<Compute<S>>> x_pad, dy_planes;
  const int64_t border = g.kernel / 2;
  for (int64_t b = begin; b < end; ++b) {
    const int64_t stride = pad_image(g, in, b, border, 0, x_pad);
    pad_image(g, grad_out, b, 0, 0, dy_planes);
    for (int64_t p = 0; p < g.packs(); ++p) {
      const int64_t r = g.pack_radius[p];
      const Pack<Compute<S>>* x = x_pad.data() + p * g.height * stride + border - r;
      const Pack<Compute<S>>* dy = dy_planes.data() + p * g.height * g.width;
      with_radius(r, [&](auto radius) {
        weight_grad_block<decltype(radius)::value, Compute<S>>(g, x, stride, dy, total + layout.offsets[p]);
      });
    }
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
    const TapLayout layout(g);
    std::vector<Pack<T>> weights(layout.size);
    for (int64_t p = 0; p < g.packs(); ++p) {
      const int64_t c0 = p * kLanes, lanes = std::min(kLanes, g.channels - c0), r = g.pack_radius[p];
      for (int64_t i = -r; i <= r; ++i) {
        for (int64_t j = -r; j <= r; ++j) {
          weights[layout.offsets[p] + (i + r) * (2 * r + 1) + j + r] =
              load_lanes(w.const_data_ptr<T>() + g.tap(i, j) * g.channels + c0, 1, lanes);
        }
      }
    }
    const T* bias_ptr = bias ? bias_data.const_data_ptr<T>() : nullptr;
    at::parallel_for(0, g.batch, 1, [&](int64_t begin, int64_t end) {
      forward_images(g, in.const_data_ptr<S>(), weights, layout.offsets, bias_ptr, out.data_ptr<S>(), begin, end);
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
  const TapLayout layout(g);
  dispatch_storage(input.scalar_type(), [&](auto tag) {
    using S = decltype(tag);
    using T = Compute<S>;
    const int64_t threads = at::get_num_threads();
    std::vector<Pack<T>> totals(threads * layout.size, Pack<T>{});  // per thread
    at::parallel_for(0, g.batch, 1, [&](int64_t begin, int64_t end) {
      weight_grad_images(g, in.const_data_ptr<S>(), dy.const_data_ptr<S>(), layout,
                         totals.data() + at::get_thread_num() * layout.size, begin, end);
    });
    // into the (K * K, C) sums at the centred taps; a channel's taps beyond its own radius (a pack's radius is its
    // channels' largest) stay zero
    T* out = sums.data_ptr<T>();
    for (int64_t p = 0; p < g.packs(); ++p) {
      const int64_t c0 = p * kLanes, lanes = std::min(kLanes, g.channels - c0), r = g.pack_radius[p];
      for (int64_t i = -r; i <= r; ++i) {
        for (int64_t j = -r; j <= r; ++j) {
          const int64_t at = layout.offsets[p] + (i + r) * (2 * r + 1) + j + r;
          Pack<T> sum = {};
          for (int64_t t = 0; t < threads; ++t) sum += totals[t * layout.size + at];
          for (int64_t l = 0; l < lanes && !g.channel_radius.empty(); ++l) {
            if (std::max(std::abs(i), std::abs(j)) > g.channel_radius[c0 + l]) sum[l] = 0;
          }
          store_lanes(out + g.tap(i, j) * g.channels + c0, 1, sum, lanes);
        }
      }
    }
  });
  return sums.t().reshape({g.channels, 1, kernel, kernel});
}

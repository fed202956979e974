// Selective scan (Mamba's S6 recurrence) on CPU, forward and backward.
//
//   h_t = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t        h: (N,) per (batch, channel) row
//   y_t = C_t . h_t + D * u_t,   out_t = y_t * silu(z_t)    dt_t = softplus(delta_t + bias) or delta_t + bias
//
// Shape contract (mamba_ssm's; one floating dtype, checked first and with clearer messages by the Python wrapper):
//   u, delta, z: (batch, dim, L)   A: (dim, N)   B, C: (batch, G, N, L)   D, delta_bias: (dim,)
//   channel d reads group d / (dim / G).
//
// Why it is fast on CPU: each (batch, channel) row is one sequential pass over L with its N states in a few SIMD
// registers; nothing of size (batch, dim, L, N) is ever written, and no (batch, dim, L) temporary either (softplus,
// sigmoid, silu are computed per row). The backward recomputes one row's states and decays into a per-thread buffer
// of 2 (L + 1) N values (in L2 for the usual L) and runs the reverse recurrence over it, so the forward saves
// nothing but its inputs.
//
// Layout: B and C are copied once to (batch, G, L, Np), Np = N rounded up to kRowLanes, so that one step's states
// are adjacent and split into whole packs. Padded lanes have A = B = C = 0: their decay is 1, their state stays 0,
// and they add nothing anywhere.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "simd.h"

namespace {

using namespace ssmamba_simd;

// log1p of a float pack with every lane in [0, 1] (all that softplus needs). With u = 1 + y rounded,
// log1p(y) = log(u) * y / (u - 1) cancels the rounding of u (Goldberg); log(u), u in [1, 2], is m - 1 plus a
// degree-8 polynomial after folding u above sqrt(2) to u / 2 (max error about 3 ulp).
template <typename V>
inline V log1p_unit_pack(V y) {
  if constexpr (std::is_same_v<Elem<V>, double>) {
    return per_lane(y, [](double v) { return std::log1p(v); });
  } else {
    const V zero = {};
    const V u = 1.0f + y;
    const auto folded = u > 1.41421356f;
    const V e = folded ? zero + 1.0f : zero;
    const V x = (folded ? u * 0.5f : u) - 1.0f;
    const V x2 = x * x;
    V p = zero + 7.0376836292e-2f;
    p = p * x - 1.1514610310e-1f;
    p = p * x + 1.1676998740e-1f;
    p = p * x - 1.2420140846e-1f;
    p = p * x + 1.4249322787e-1f;
    p = p * x - 1.6668057665e-1f;
    p = p * x + 2.0000714765e-1f;
    p = p * x - 2.4999993993e-1f;
    p = p * x + 3.3333331174e-1f;
    const V log_u = (x + ((p * x * x2 + e * -2.12194440e-4f) - 0.5f * x2)) + e * 0.693359375f;
    const V rounded = u - 1.0f;
    return rounded == 0.0f ? y : log_u * (y / (rounded == 0.0f ? zero + 1.0f : rounded));
  }
}

// sigmoid and softplus are computed from e = exp(-|x|) in (0, 1], which never overflows.
template <typename V>
inline V exp_minus_abs(const V& x) { return exp_pack(x < 0 ? x : -x); }
template <typename V>
inline V sigmoid_pack(const V& x, const V& e) { return (x >= 0 ? V{} + 1 : e) / (1 + e); }

// ---------------------------------------------------------------------------------------------------------------
// Row kernels. One row = one (batch, channel) pair; K = Np / kRowLanes packs of state.

// Raw pointers of one call; optional ones are null. B, C: (batch, G, L, Np); A: (dim, Np); the rest (batch, dim, L).
template <typename T>
struct ScanInputs {
  const T *u, *delta, *A, *B, *C;
  const T *D, *z, *delta_bias;
  bool delta_softplus;
  int64_t batch, dim, length, packs, groups;

  int64_t row(int64_t b, int64_t d) const { return (b * dim + d) * length; }
  int64_t state_width() const { return packs * kRowLanes; }
  int64_t group_of(int64_t b, int64_t d) const { return (b * groups + d / (dim / groups)) * length * state_width(); }
};

// Element-wise inputs of one row, pack by pack: dt (L,), and with `slope` softplus' derivative d dt / d delta;
// with z, `gate` = silu(z) (forward, `gate_is_silu`) or sigmoid(z) (backward).
template <typename T>
void prepare_row(const ScanInputs<T>& in, int64_t b, int64_t d, bool gate_is_silu, T* dt, T* slope, T* gate) {
  const int64_t r = in.row(b, d);
  const T bias = in.delta_bias ? in.delta_bias[d] : T(0);
  for (int64_t t = 0; t < in.length; t += kRowLanes) {
    const int64_t n = std::min(kRowLanes, in.length - t);
    const RowPack<T> raw = load_first<T, kRowLanes>(in.delta + r + t, n) + bias;
    if (in.delta_softplus) {
      const RowPack<T> e = exp_minus_abs(raw);
      store_first(dt + t, (raw > 0 ? raw : RowPack<T>{}) + log1p_unit_pack(e), n);
      if (slope) store_first(slope + t, sigmoid_pack(raw, e), n);
    } else {
      store_first(dt + t, raw, n);
    }
    if (in.z) {
      const RowPack<T> z = load_first<T, kRowLanes>(in.z + r + t, n);
      const RowPack<T> sig = sigmoid_pack(z, exp_minus_abs(z));
      store_first(gate + t, gate_is_silu ? z * sig : sig, n);
    }
  }
}

// h <- exp(dt A) h + dt x B over all packs; returns the pack whose lanes sum to C . h.
template <typename T>
inline RowPack<T> scan_step(const RowPack<T>* A, const T* B_t, const T* C_t, T dt, T x, RowPack<T>* h, int64_t K) {
  const T dt_x = dt * x;
  RowPack<T> y = {};
  for (int64_t k = 0; k < K; ++k) {
    h[k] = exp_pack(dt * A[k]) * h[k] + dt_x * load<T, kRowLanes>(B_t + k * kRowLanes);
    y += load<T, kRowLanes>(C_t + k * kRowLanes) * h[k];
  }
  return y;
}

template <typename T>
void load_A(const ScanInputs<T>& in, int64_t d, RowPack<T>* A) {
  for (int64_t k = 0; k < in.packs; ++k) A[k] = load<T, kRowLanes>(in.A + (d * in.packs + k) * kRowLanes);
}

// Per-thread scratch of the forward.
template <typename T>
struct ForwardScratch {
  std::vector<RowPack<T>> A, h;
  std::vector<T> dt, gate;
  ForwardScratch(int64_t L, int64_t K) : A(K), h(K), dt(L), gate(L) {}
};

// Writes out (L,) of row (b, d) and its final state (Np,).
template <typename T>
void forward_row(const ScanInputs<T>& in, int64_t b, int64_t d, ForwardScratch<T>& s, T* out, T* last_state) {
  const int64_t K = in.packs, Np = in.state_width(), r = in.row(b, d);
  prepare_row<T>(in, b, d, /*gate_is_silu=*/true, s.dt.data(), nullptr, s.gate.data());
  const T* u = in.u + r;
  const T* B = in.B + in.group_of(b, d);
  const T* C = in.C + in.group_of(b, d);
  const T skip = in.D ? in.D[d] : T(0);
  RowPack<T>* h = s.h.data();
  load_A(in, d, s.A.data());
  std::fill(h, h + K, RowPack<T>{});
  for (int64_t t = 0; t < in.length; ++t) {
    const T y = horizontal_sum(scan_step(s.A.data(), B + t * Np, C + t * Np, s.dt[t], u[t], h, K)) + skip * u[t];
    out[r + t] = in.z ? y * s.gate[t] : y;
  }
  for (int64_t k = 0; k < K; ++k) store(last_state + (b * in.dim + d) * Np + k * kRowLanes, h[k]);
}

// Gradient outputs. dA, dD, ddelta_bias get one slot per (batch, channel) row, summed over batch afterwards, so
// no two threads ever write the same place. dB, dC are accumulated over the channels of a work unit.
template <typename T>
struct ScanGrads {
  const T *dout, *dlast;               // (batch, dim, L), (batch, dim, Np) or null
  T *du, *ddelta, *dz;                 // (batch, dim, L); dz null without z
  T *dA_rows, *dD_rows, *ddelta_bias_rows;  // (batch, dim, Np), (batch, dim), (batch, dim)
};

// Per-thread scratch of the backward, sized once per parallel chunk.
template <typename T>
struct BackwardScratch {
  std::vector<RowPack<T>> A, states, decays, dh, dA;
  std::vector<T> dt, slope, gate, y;
  BackwardScratch(int64_t L, int64_t K)
      : A(K), states((L + 1) * K), decays(L * K), dh(K), dA(K), dt(L), slope(L), gate(L), y(L) {}
};

// Forward pass of one row keeping every state h_t (at (t + 1) * K, h_{-1} = 0 at 0) and decay exp(dt_t A);
// with kWithOutput also y_t before gating, which dz needs.
template <typename T, bool kWithOutput>
void recompute_row(const ScanInputs<T>& in, int64_t r, const T* B, const T* C, T skip, BackwardScratch<T>& s) {
  const int64_t K = in.packs, Np = in.state_width();
  const T* u = in.u + r;
  RowPack<T>* states = s.states.data();
  std::fill(states, states + K, RowPack<T>{});
  for (int64_t t = 0; t < in.length; ++t) {
    const T dt = s.dt[t], dt_x = dt * u[t];
    RowPack<T> y = {};
    for (int64_t k = 0; k < K; ++k) {
      const RowPack<T> decay = exp_pack(dt * s.A[k]);
      const RowPack<T> h = decay * states[t * K + k] + dt_x * load<T, kRowLanes>(B + t * Np + k * kRowLanes);
      s.decays[t * K + k] = decay;
      states[(t + 1) * K + k] = h;
      if constexpr (kWithOutput) y += load<T, kRowLanes>(C + t * Np + k * kRowLanes) * h;
    }
    if constexpr (kWithOutput) s.y[t] = horizontal_sum(y) + skip * u[t];
  }
}

template <typename T>
void backward_row(const ScanInputs<T>& in, const ScanGrads<T>& g, int64_t b, int64_t d, BackwardScratch<T>& s,
                  T* dB, T* dC) {
  using P = RowPack<T>;
  const int64_t L = in.length, K = in.packs, Np = in.state_width(), r = in.row(b, d);
  const T* u = in.u + r;
  const T* B = in.B + in.group_of(b, d);
  const T* C = in.C + in.group_of(b, d);
  const T skip = in.D ? in.D[d] : T(0);
  prepare_row<T>(in, b, d, /*gate_is_silu=*/false, s.dt.data(), s.slope.data(), s.gate.data());
  load_A(in, d, s.A.data());
  if (in.z) {
    recompute_row<T, true>(in, r, B, C, skip, s);
  } else {
    recompute_row<T, false>(in, r, B, C, skip, s);
  }

  // reverse recurrence: dh carries d loss / d h_t from step t + 1 back to step t
  const P* A = s.A.data();
  const P* states = s.states.data();
  P* dh = s.dh.data();
  P* dA = s.dA.data();
  for (int64_t k = 0; k < K; ++k) {
    dh[k] = g.dlast ? load<T, kRowLanes>(g.dlast + (b * in.dim + d) * Np + k * kRowLanes) : P{};
    dA[k] = P{};
  }
  T dD = 0, ddelta_bias = 0;
  for (int64_t t = L - 1; t >= 0; --t) {
    T dy = g.dout[r + t];
    if (in.z) {
      const T z = in.z[r + t], sig = s.gate[t];
      g.dz[r + t] = dy * s.y[t] * sig * (T(1) + z * (T(1) - sig));
      dy *= z * sig;
    }
    const T x = u[t], dt = s.dt[t], dt_x = dt * x;
    P ddt = {}, dx = {};
    for (int64_t k = 0; k < K; ++k) {
      const int64_t at = t * Np + k * kRowLanes;
      const P B_k = load<T, kRowLanes>(B + at);
      const P decay = s.decays[t * K + k];
      const P dh_now = dh[k] + dy * load<T, kRowLanes>(C + at);                 // everything that reaches h_t
      const P through_decay = dh_now * decay * states[t * K + k];  // d loss / d (dt A), per state
      store(dC + at, load<T, kRowLanes>(dC + at) + dy * states[(t + 1) * K + k]);
      store(dB + at, load<T, kRowLanes>(dB + at) + dh_now * dt_x);
      dA[k] += through_decay * dt;
      ddt += through_decay * A[k] + dh_now * B_k * x;
      dx += dh_now * B_k;
      dh[k] = dh_now * decay;
    }
    const T ddelta = in.delta_softplus ? horizontal_sum(ddt) * s.slope[t] : horizontal_sum(ddt);
    g.ddelta[r + t] = ddelta;
    g.du[r + t] = dy * skip + dt * horizontal_sum(dx);
    dD += dy * x;
    ddelta_bias += ddelta;
  }
  for (int64_t k = 0; k < K; ++k) store(g.dA_rows + (b * in.dim + d) * Np + k * kRowLanes, dA[k]);
  g.dD_rows[b * in.dim + d] = dD;
  g.ddelta_bias_rows[b * in.dim + d] = ddelta_bias;
}

// ---------------------------------------------------------------------------------------------------------------
// Entry points: layout changes and checks around the row kernels.

int64_t padded_state(int64_t N) { return (N + kRowLanes - 1) / kRowLanes * kRowLanes; }

// (..., N) -> contiguous (..., Np) with zeros in the extra lanes
at::Tensor pad_last(const at::Tensor& x, int64_t Np) {
  if (x.size(-1) == Np) return x.contiguous();
  std::vector<int64_t> sizes(x.sizes().begin(), x.sizes().end());
  sizes.back() = Np;
  at::Tensor padded = at::zeros(sizes, x.options());
  padded.narrow(-1, 0, x.size(-1)).copy_(x);
  return padded;
}

// (batch, G, N, L) -> contiguous (batch, G, L, Np)
at::Tensor time_major(const at::Tensor& B, int64_t Np) { return pad_last(B.transpose(2, 3), Np); }

// (batch, G, L, Np) -> (batch, G, N, L)
at::Tensor state_major(const at::Tensor& dB, int64_t N) { return dB.narrow(3, 0, N).transpose(2, 3); }

const at::Tensor* optional_ptr(const std::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? &*t : nullptr;
}

std::optional<at::Tensor> contiguous_or_none(const std::optional<at::Tensor>& t) {
  const at::Tensor* p = optional_ptr(t);
  return p ? std::optional<at::Tensor>(p->contiguous()) : std::nullopt;
}

void check_same(const at::Tensor& t, const at::Tensor& u, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == u.scalar_type(), "selective_scan_cpu: ", name,
              " must be a CPU tensor of u's dtype ", u.scalar_type(), ", got ", t.scalar_type(), " on ", t.device());
}

// A safety net against out-of-bounds access: the Python wrapper has already checked, with clearer messages.
void check_inputs(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                  const at::Tensor& C, const at::Tensor* D, const at::Tensor* z, const at::Tensor* delta_bias) {
  const bool shapes_ok = u.dim() == 3 && delta.sizes() == u.sizes() && A.dim() == 2 && A.size(0) == u.size(1) &&
                         B.dim() == 4 && B.size(0) == u.size(0) && B.size(1) > 0 && u.size(1) % B.size(1) == 0 &&
                         B.size(2) == A.size(1) && B.size(3) == u.size(2) && C.sizes() == B.sizes() &&
                         (!D || D->sizes() == A.sizes().slice(0, 1)) && (!z || z->sizes() == u.sizes()) &&
                         (!delta_bias || delta_bias->sizes() == A.sizes().slice(0, 1));
  TORCH_CHECK(shapes_ok, "selective_scan_cpu: shapes break the contract u, delta, z (batch, dim, L), A (dim, N), ",
              "B, C (batch, G, N, L), D, delta_bias (dim,)");
  TORCH_CHECK(u.scalar_type() == at::kFloat || u.scalar_type() == at::kDouble,
              "selective_scan_cpu: computes in float32 or float64, got ", u.scalar_type());
  using Named = std::pair<const at::Tensor*, const char*>;
  for (const auto& [t, name] : {Named{&delta, "delta"}, Named{&A, "A"}, Named{&B, "B"}, Named{&C, "C"},
                                Named{D, "D"}, Named{z, "z"}, Named{delta_bias, "delta_bias"}}) {
    if (t) check_same(*t, u, name);
  }
}

// The inputs of one call in the kernels' layout; owns the contiguous and padded copies.
struct PreparedInputs {
  at::Tensor u, delta, A, B, C;
  std::optional<at::Tensor> D, z, delta_bias;
  bool delta_softplus;
  int64_t N, Np;

  PreparedInputs(const at::Tensor& u_in, const at::Tensor& delta_in, const at::Tensor& A_in, const at::Tensor& B_in,
                 const at::Tensor& C_in, const std::optional<at::Tensor>& D_in,
                 const std::optional<at::Tensor>& z_in, const std::optional<at::Tensor>& delta_bias_in,
                 bool softplus)
      : u(u_in.contiguous()),
        delta(delta_in.contiguous()),
        D(contiguous_or_none(D_in)),
        z(contiguous_or_none(z_in)),
        delta_bias(contiguous_or_none(delta_bias_in)),
        delta_softplus(softplus) {
    check_inputs(u, delta, A_in, B_in, C_in, optional_ptr(D), optional_ptr(z), optional_ptr(delta_bias));
    N = A_in.size(1);
    Np = padded_state(N);
    A = pad_last(A_in, Np);
    B = time_major(B_in, Np);
    C = time_major(C_in, Np);
  }

  template <typename T>
  ScanInputs<T> pointers() const {
    auto ptr = [](const std::optional<at::Tensor>& t) { return t ? t->data_ptr<T>() : nullptr; };
    return ScanInputs<T>{u.data_ptr<T>(), delta.data_ptr<T>(), A.data_ptr<T>(), B.data_ptr<T>(),
                         C.data_ptr<T>(), ptr(D),              ptr(z),          ptr(delta_bias),
                         delta_softplus,  u.size(0),           u.size(1),       u.size(2),
                         Np / kRowLanes,     B.size(1)};
  }
};

// Returns (out (batch, dim, L), last_state (batch, dim, N)).
std::vector<at::Tensor> selective_scan_forward(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                               const at::Tensor& B, const at::Tensor& C,
                                               const std::optional<at::Tensor>& D,
                                               const std::optional<at::Tensor>& z,
                                               const std::optional<at::Tensor>& delta_bias, bool delta_softplus) {
  const PreparedInputs p(u, delta, A, B, C, D, z, delta_bias, delta_softplus);
  at::Tensor out = at::empty_like(p.u);
  at::Tensor last_state = at::empty({p.u.size(0), p.u.size(1), p.Np}, p.u.options());
  AT_DISPATCH_FLOATING_TYPES(p.u.scalar_type(), "selective_scan_forward", [&] {
    const auto in = p.pointers<scalar_t>();
    scalar_t* out_ptr = out.data_ptr<scalar_t>();
    scalar_t* last_ptr = last_state.data_ptr<scalar_t>();
    at::parallel_for(0, in.batch * in.dim, 1, [&](int64_t begin, int64_t end) {
      ForwardScratch<scalar_t> scratch(in.length, in.packs);
      for (int64_t row = begin; row < end; ++row) {
        forward_row<scalar_t>(in, row / in.dim, row % in.dim, scratch, out_ptr, last_ptr);
      }
    });
  });
  return {out, last_state.narrow(2, 0, p.N)};
}

// Returns (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias) in the inputs' shapes; dD, dz, ddelta_bias are undefined
// (None in Python) when the matching input was absent.
std::vector<at::Tensor> selective_scan_backward(
    const at::Tensor& u_in, const at::Tensor& delta_in, const at::Tensor& A_in, const at::Tensor& B_in,
    const at::Tensor& C_in, const std::optional<at::Tensor>& D_in, const std::optional<at::Tensor>& z_in,
    const std::optional<at::Tensor>& delta_bias_in, bool delta_softplus, const at::Tensor& dout_in,
    const std::optional<at::Tensor>& dlast_in) {
  const PreparedInputs p(u_in, delta_in, A_in, B_in, C_in, D_in, z_in, delta_bias_in, delta_softplus);
  const at::Tensor dout = dout_in.contiguous();
  TORCH_CHECK(dout.sizes() == p.u.sizes(), "selective_scan_cpu: dout must be (batch, dim, L)");
  check_same(dout, p.u, "dout");
  const at::Tensor* dlast_given = optional_ptr(dlast_in);
  TORCH_CHECK(!dlast_given || dlast_given->sizes() == at::IntArrayRef({p.u.size(0), p.u.size(1), p.N}),
              "selective_scan_cpu: dlast_state must be (batch, dim, N)");
  if (dlast_given) check_same(*dlast_given, p.u, "dlast_state");
  const at::Tensor dlast = dlast_given ? pad_last(*dlast_given, p.Np) : at::Tensor();

  const int64_t batch = p.u.size(0), dim = p.u.size(1), L = p.u.size(2), groups = p.B.size(1);
  const int64_t channels_per_group = dim / groups;
  // Work unit = (batch, group, block of that group's channels). dB/dC are sums over a group's channels, so each
  // unit accumulates into its own (L, Np) slab: with one block per group (enough units for the threads) that slab
  // is dB itself; otherwise slabs (batch, G, blocks, L, Np) are summed at the end. No atomics either way.
  const int64_t wanted_units = 4 * static_cast<int64_t>(at::get_num_threads());
  const int64_t blocks =
      std::clamp<int64_t>((wanted_units + batch * groups - 1) / (batch * groups), 1, channels_per_group);
  const int64_t channels_per_block = (channels_per_group + blocks - 1) / blocks;

  at::Tensor du = at::empty_like(p.u), ddelta = at::empty_like(p.u);
  at::Tensor dz = p.z ? at::empty_like(p.u) : at::Tensor();
  at::Tensor dA_rows = at::empty({batch, dim, p.Np}, p.u.options());
  at::Tensor dD_rows = at::empty({batch, dim}, p.u.options());
  at::Tensor ddelta_bias_rows = at::empty({batch, dim}, p.u.options());
  at::Tensor dB_slabs = at::zeros({batch, groups, blocks, L, p.Np}, p.u.options());
  at::Tensor dC_slabs = at::zeros_like(dB_slabs);

  AT_DISPATCH_FLOATING_TYPES(p.u.scalar_type(), "selective_scan_backward", [&] {
    const auto in = p.pointers<scalar_t>();
    auto ptr = [](const at::Tensor& t) { return t.defined() ? t.data_ptr<scalar_t>() : nullptr; };
    const ScanGrads<scalar_t> g{ptr(dout), ptr(dlast),   ptr(du),      ptr(ddelta),
                                ptr(dz),   ptr(dA_rows), ptr(dD_rows), ptr(ddelta_bias_rows)};
    const int64_t slab = L * p.Np;
    scalar_t* dB_base = dB_slabs.data_ptr<scalar_t>();
    scalar_t* dC_base = dC_slabs.data_ptr<scalar_t>();
    at::parallel_for(0, batch * groups * blocks, 1, [&](int64_t begin, int64_t end) {
      BackwardScratch<scalar_t> scratch(L, in.packs);
      for (int64_t unit = begin; unit < end; ++unit) {
        const int64_t b = unit / (groups * blocks), group = (unit / blocks) % groups, block = unit % blocks;
        const int64_t first = group * channels_per_group + block * channels_per_block;
        const int64_t last = std::min(first + channels_per_block, (group + 1) * channels_per_group);
        for (int64_t d = first; d < last; ++d) {
          backward_row<scalar_t>(in, g, b, d, scratch, dB_base + unit * slab, dC_base + unit * slab);
        }
      }
    });
  });
  const at::Tensor dB = blocks == 1 ? dB_slabs.squeeze(2) : dB_slabs.sum(2);
  const at::Tensor dC = blocks == 1 ? dC_slabs.squeeze(2) : dC_slabs.sum(2);
  return {du,
          ddelta,
          dA_rows.sum(0).narrow(1, 0, p.N),
          state_major(dB, p.N),
          state_major(dC, p.N),
          p.D ? dD_rows.sum(0) : at::Tensor(),
          dz,
          p.delta_bias ? ddelta_bias_rows.sum(0) : at::Tensor()};
}

// ---------------------------------------------------------------------------------------------------------------
// Directional scans over a token grid, read in place (the DMS mixer's K directions in one call).
//
//   u: (batch, E, L), any strides, shared by the K directions     delta: (batch, K, E, L), any strides
//   A: (K, E, N), or (K, E, 1): one decay per channel shared by its N states (Mamba-2's scalar A: one exp per
//   step instead of N)   D, delta_bias: (K, E)   B, C: (batch, G, N, L), any strides, G = K M: direction k's channels
//   are split into M groups, channel e of direction k reads group k M + e / (E / M)
//   order: (K, L) permutations: step t of direction k reads token order[k][t] of the row-major grid
//   out: (batch, E, L) in u's layout = the sum over k of direction k's y_t, written back at the token it read
//
// Nothing is reordered, stacked or flipped in memory: every access goes through `order` and the strides. SIMD runs
// across kLanes adjacent channels instead of across the state, so one step of a channel block is N independent
// pack chains (latency hidden), y_t needs no horizontal sum, and with channels-last tensors (stride 1 over
// channels, which is how DMS makes them) one token's block is one contiguous load. B_t and C_t are scalars
// broadcast to the block. Storage may be float32, bfloat16 or float64; the state and every sum are float32
// (float64 for float64 inputs). The backward recomputes the states chunk by chunk (up to kMaxChunk steps, held
// in L2 with their decays) from checkpoints kept at chunk starts; a sequence of one chunk (L <= kMaxChunk, e.g.
// every DMS grid of a 224 px image) needs no checkpoint pass, so its backward recomputes the forward once. Both
// passes take a chunk's element-wise inputs (softplus, and a scalar A's decay) in a pass of their own before its
// recurrence, and the backward sums dB and dC over channel lanes once per work unit, not per step.

// dt from the biased raw delta; `slope` (if asked) gets d dt / d raw.
template <typename V>
inline V delta_to_dt(const V& raw, bool softplus, V* slope) {
  if (!softplus) {
    if (slope) *slope = V{} + 1;
    return raw;
  }
  const V e = exp_minus_abs(raw);
  if (slope) *slope = sigmoid_pack(raw, e);
  return (raw > 0 ? raw : V{}) + log1p_unit_pack(e);
}

// The element-wise pass over `steps` steps: dt from raw_of(i) (with `slope`, d dt / d raw too), and with `scalar`
// each step's decay exp(dt A0). Four steps per loop body: their exp and log chains do not depend on each other, and
// with one step per body the out-of-order core overlapped too few of them (the directional forward ran 1.1x as long).
constexpr int64_t kElementUnroll = 4;

template <typename V, typename RawOf>
inline void element_pass(int64_t steps, RawOf raw_of, bool softplus, bool scalar, const V& A0, V* dt, V* slope,
                         V* decays) {
  int64_t i = 0;
  for (; i + kElementUnroll <= steps; i += kElementUnroll) {
    V block[kElementUnroll];
    for (int64_t j = 0; j < kElementUnroll; ++j) {
      block[j] = delta_to_dt(raw_of(i + j), softplus, slope ? slope + i + j : nullptr);
    }
    for (int64_t j = 0; j < kElementUnroll; ++j) {
      dt[i + j] = block[j];
      if (scalar) decays[i + j] = exp_pack(block[j] * A0);
    }
  }
  for (; i < steps; ++i) {
    dt[i] = delta_to_dt(raw_of(i), softplus, slope ? slope + i : nullptr);
    if (scalar) decays[i] = exp_pack(dt[i] * A0);
  }
}

constexpr int64_t kMaxChunk = 256;

// Raw pointers and strides of one call; optional ones are null.
template <typename S>
struct GridScan {
  using T = Compute<S>;
  const S *u, *delta, *B, *C;
  const T *A, *D, *delta_bias;
  const int64_t* order;
  bool delta_softplus, scalar_decay;  // scalar_decay: A is (K, E, 1)
  int64_t batch, directions, channels, length, state, groups_per_direction;
  int64_t su[3], sdelta[4], sB[4], sC[4];

  int64_t group(int64_t k, int64_t e) const {
    return k * groups_per_direction + e / (channels / groups_per_direction);
  }
  const S* u_at(int64_t b, int64_t e) const { return u + b * su[0] + e * su[1]; }
  const S* delta_at(int64_t b, int64_t k, int64_t e) const {
    return delta + b * sdelta[0] + k * sdelta[1] + e * sdelta[2];
  }
  const S* B_at(int64_t b, int64_t g) const { return B + b * sB[0] + g * sB[1]; }
  const S* C_at(int64_t b, int64_t g) const { return C + b * sC[0] + g * sC[1]; }
};

// A segment: channels [first, first + lanes) of one group, lanes <= kLanes.
struct Segment {
  int64_t first, lanes;
};

std::vector<Segment> segments(int64_t channels, int64_t groups_per_direction) {
  std::vector<Segment> result;
  const int64_t width = channels / groups_per_direction;
  for (int64_t j = 0; j < groups_per_direction; ++j) {
    for (int64_t e = j * width; e < (j + 1) * width; e += kLanes) {
      result.push_back({e, std::min(kLanes, (j + 1) * width - e)});
    }
  }
  return result;
}

// The backward's dB and dC are sums over a group's channels. Summing a step's terms over the channel lanes costs
// more than the step's arithmetic, so a work unit adds them per lane into (G, L, N) packs (vertical adds) and sums
// the lanes once at its end, instead of 2 N lane sums per step and segment, while those packs stay in L2 (this
// budget per array, with the states beside them). Past it (long grids: 896 px), it sums lanes at every step.
constexpr int64_t kLaneSlabBytes = 512 * 1024;

// Per-thread scratch. x, dt, slope, decays: one chunk's element-wise inputs (decays (chunk, N), or (chunk,) with a
// scalar A). dB_lanes, dC_lanes: the backward's (G, L, N) per-lane packs, when it uses them (`lane_slab_size`).
template <typename T>
struct GridScratch {
  int64_t chunk;  // steps whose inputs are prepared at a time (and that the backward recomputes at a time)
  std::vector<Pack<T>> acc, A, h, dh, dA, checkpoints, states, decays, x, dt, slope;
  std::vector<Half<Pack<T>>> dB_lanes, dC_lanes;
  GridScratch(int64_t L, int64_t N, int64_t lane_slab_size, bool backward)
      : chunk(std::min(L, kMaxChunk)), acc(L), A(N), h(N), decays(chunk * N), x(chunk), dt(chunk) {
    if (!backward) return;
    dh.resize(N), dA.resize(N), dB_lanes.resize(lane_slab_size), dC_lanes.resize(lane_slab_size);
    checkpoints.resize(((L + chunk - 1) / chunk) * N);
    states.resize((chunk + 1) * N), slope.resize(chunk);
  }
};

// Direction k's A (N packs; with scalar_decay N copies of the one), D and bias of the segment's channels.
template <typename S>
void load_direction(const GridScan<S>& in, int64_t k, const Segment& seg, Pack<Compute<S>>* A,
                    Pack<Compute<S>>& D, Pack<Compute<S>>& bias) {
  using T = Compute<S>;
  const int64_t N = in.state, row = k * in.channels + seg.first, width = in.scalar_decay ? 1 : N;
  for (int64_t n = 0; n < N; ++n) {
    A[n] = load_lanes<T>(in.A + row * width + (in.scalar_decay ? 0 : n), width, seg.lanes);
  }
  D = in.D ? load_lanes<T>(in.D + row, 1, seg.lanes) : Pack<T>{};
  bias = in.delta_bias ? load_lanes<T>(in.delta_bias + row, 1, seg.lanes) : Pack<T>{};
}

// x and dt of the `steps` tokens from step t0 of `order`, and with a scalar A each step's decay exp(dt A): a pass of
// its own, because these steps do not depend on each other. Computed inside the recurrence, the softplus and exp
// chains (~100 cycles of latency) sit on its critical path step after step (the forward took 1.3x as long, N = 16).
template <typename S, bool kScalar>
void prepare_steps(const GridScan<S>& in, const Segment& seg, const S* u, const S* delta, const int64_t* order,
                   int64_t steps, const Pack<Compute<S>>& A0, const Pack<Compute<S>>& bias, GridScratch<Compute<S>>& s,
                   Pack<Compute<S>>* slope) {
  auto raw_delta = [&](int64_t i) {
    return load_lanes(delta + order[i] * in.sdelta[3], in.sdelta[2], seg.lanes) + bias;
  };
  element_pass(steps, raw_delta, in.delta_softplus, kScalar, A0, s.dt.data(), slope, s.decays.data());
  for (int64_t i = 0; i < steps; ++i) s.x[i] = load_lanes(u + order[i] * in.su[2], in.su[1], seg.lanes);
}

// One step of the recurrence for a channel block: h <- exp(dt A) h + dt x B_t (exp(dt A) = `decay` with a scalar
// A); returns C_t . h per channel.
template <typename S, bool kWithOutput, bool kScalar>
inline Pack<Compute<S>> grid_step(const GridScan<S>& in, const Pack<Compute<S>>* A, const S* B_t, const S* C_t,
                                  const Pack<Compute<S>>& dt, const Pack<Compute<S>>& dt_x,
                                  const Pack<Compute<S>>& decay, Pack<Compute<S>>* h) {
  using T = Compute<S>;
  Pack<T> y = {};
  for (int64_t n = 0; n < in.state; ++n) {
    h[n] = (kScalar ? decay : exp_pack(dt * A[n])) * h[n] + dt_x * static_cast<T>(B_t[n * in.sB[2]]);
    if constexpr (kWithOutput) y += static_cast<T>(C_t[n * in.sC[2]]) * h[n];
  }
  return y;
}

template <typename S, bool kScalar>
void grid_forward_segment(const GridScan<S>& in, int64_t b, const Segment& seg, GridScratch<Compute<S>>& s, S* out,
                          const int64_t* so) {
  using T = Compute<S>;
  const int64_t L = in.length, N = in.state;
  Pack<T>* acc = s.acc.data();
  Pack<T>* A = s.A.data();
  Pack<T>* h = s.h.data();
  for (int64_t k = 0; k < in.directions; ++k) {
    Pack<T> D, bias;
    load_direction(in, k, seg, A, D, bias);
    std::fill(h, h + N, Pack<T>{});
    const int64_t* order = in.order + k * L;
    const S* u = in.u_at(b, seg.first);
    const S* delta = in.delta_at(b, k, seg.first);
    const int64_t g = in.group(k, seg.first);
    const S* B = in.B_at(b, g);
    const S* C = in.C_at(b, g);
    for (int64_t t0 = 0; t0 < L; t0 += s.chunk) {
      const int64_t steps = std::min(s.chunk, L - t0);
      prepare_steps<S, kScalar>(in, seg, u, delta, order + t0, steps, A[0], bias, s, nullptr);
      for (int64_t i = 0; i < steps; ++i) {
        const int64_t l = order[t0 + i];
        const Pack<T> x = s.x[i], dt = s.dt[i];
        const Pack<T> y =
            grid_step<S, true, kScalar>(in, A, B + l * in.sB[3], C + l * in.sC[3], dt, dt * x, s.decays[i], h) +
            D * x;
        acc[l] = k == 0 ? y : acc[l] + y;
      }
    }
  }
  S* o = out + b * so[0] + seg.first * so[1];
  for (int64_t l = 0; l < L; ++l) store_lanes(o + l * so[2], so[1], acc[l], seg.lanes);
}

template <typename S>
struct GridGrads {
  using T = Compute<S>;
  const S* dout;
  int64_t sdout[3];
  S *du, *ddelta;
  int64_t sdu[3], sddelta[4];
  T *dA_rows, *dD_rows, *ddelta_bias_rows;  // (batch, K, E, N or 1), (batch, K, E), (batch, K, E)
};

// The backward of one segment, all directions, with A per state or (kScalar) one per channel. dB, dC: this unit's
// (G, L, N) slabs for batch element b; with kLaneSlab its terms go per lane into s.dB_lanes, s.dC_lanes instead.
template <typename S, bool kScalar, bool kLaneSlab>
void grid_backward_segment(const GridScan<S>& in, const GridGrads<S>& g, int64_t b, const Segment& seg,
                           GridScratch<Compute<S>>& s, Compute<S>* dB, Compute<S>* dC) {
  using T = Compute<S>;
  using P = Pack<T>;
  const int64_t L = in.length, N = in.state, chunk = s.chunk, chunks = (L + chunk - 1) / chunk;
  P* acc = s.acc.data();
  P* A = s.A.data();
  P* h = s.h.data();
  P* dh = s.dh.data();
  P* dA = s.dA.data();
  P* states = s.states.data();
  P* decays = s.decays.data();  // (chunk, N), or (chunk,) with kScalar
  for (int64_t k = 0; k < in.directions; ++k) {
    P D, bias;
    load_direction(in, k, seg, A, D, bias);
    const int64_t* order = in.order + k * L;
    const S* u = in.u_at(b, seg.first);
    const S* delta = in.delta_at(b, k, seg.first);
    const int64_t group = in.group(k, seg.first);
    const S* B = in.B_at(b, group);
    const S* C = in.C_at(b, group);
    // forward: the state at the start of every chunk (the first one is zero)
    std::fill(h, h + N, P{});
    std::copy(h, h + N, s.checkpoints.data());
    for (int64_t c = 0; c + 1 < chunks; ++c) {
      prepare_steps<S, kScalar>(in, seg, u, delta, order + c * chunk, chunk, A[0], bias, s, nullptr);
      for (int64_t i = 0; i < chunk; ++i) {
        const int64_t l = order[c * chunk + i];
        grid_step<S, false, kScalar>(in, A, B + l * in.sB[3], nullptr, s.dt[i], s.dt[i] * s.x[i], s.decays[i], h);
      }
      std::copy(h, h + N, s.checkpoints.data() + (c + 1) * N);
    }
    // reverse, chunk by chunk: recompute the chunk's states and decays, then walk it backwards
    std::fill(dh, dh + N, P{});
    std::fill(dA, dA + N, P{});
    P dD = {}, ddelta_bias = {};
    for (int64_t c = chunks - 1; c >= 0; --c) {
      const int64_t t0 = c * chunk, steps = std::min(chunk, L - t0);
      std::copy(s.checkpoints.data() + c * N, s.checkpoints.data() + (c + 1) * N, states);
      prepare_steps<S, kScalar>(in, seg, u, delta, order + t0, steps, A[0], bias, s, s.slope.data());
      for (int64_t i = 0; i < steps; ++i) {
        const int64_t l = order[t0 + i];
        const P dt = s.dt[i], dt_x = dt * s.x[i];
        const S* B_t = B + l * in.sB[3];
        for (int64_t n = 0; n < N; ++n) {
          const P decay = kScalar ? decays[i] : exp_pack(dt * A[n]);
          if constexpr (!kScalar) decays[i * N + n] = decay;
          states[(i + 1) * N + n] = decay * states[i * N + n] + dt_x * static_cast<T>(B_t[n * in.sB[2]]);
        }
      }
      for (int64_t i = steps - 1; i >= 0; --i) {
        const int64_t l = order[t0 + i];
        const P dy = load_lanes(g.dout + b * g.sdout[0] + seg.first * g.sdout[1] + l * g.sdout[2], g.sdout[1],
                                seg.lanes);
        const P x = s.x[i], dt = s.dt[i], dt_x = dt * x;
        const S* B_t = B + l * in.sB[3];
        const S* C_t = C + l * in.sC[3];
        const int64_t at = (group * L + l) * N;
        // d loss / d (dt A), summed over the states that share A (kScalar) or kept per state in dA
        P through = {}, dx = {};
        for (int64_t n = 0; n < N; ++n) {
          const T B_n = static_cast<T>(B_t[n * in.sB[2]]), C_n = static_cast<T>(C_t[n * in.sC[2]]);
          const P decay = kScalar ? decays[i] : decays[i * N + n];
          const P dh_now = dh[n] + dy * C_n;  // everything that reaches h_t
          if constexpr (kScalar) {
            through += dh_now * states[i * N + n];  // times decay below, once
          } else {
            const P through_n = dh_now * decay * states[i * N + n];
            dA[n] += through_n * dt;
            through += through_n * A[n];
          }
          if constexpr (kLaneSlab) {
            s.dC_lanes[at + n] += fold(dy * states[(i + 1) * N + n]);
            s.dB_lanes[at + n] += fold(dh_now * dt_x);
          } else {
            dC[at + n] += horizontal_sum(dy * states[(i + 1) * N + n]);
            dB[at + n] += horizontal_sum(dh_now * dt_x);
          }
          dx += dh_now * B_n;
          dh[n] = dh_now * decay;
        }
        if constexpr (kScalar) {
          through *= decays[i];
          dA[0] += through * dt;
          through *= A[0];
        }
        const P ddelta = (through + x * dx) * s.slope[i];  // d dt: through the decay, and through dt x B
        store_lanes(g.ddelta + b * g.sddelta[0] + k * g.sddelta[1] + seg.first * g.sddelta[2] + l * g.sddelta[3],
                    g.sddelta[2], ddelta, seg.lanes);
        const P du = dy * D + dt * dx;
        acc[l] = k == 0 ? du : acc[l] + du;
        dD += dy * x;
        ddelta_bias += ddelta;
      }
    }
    const int64_t row = (b * in.directions + k) * in.channels + seg.first;
    for (int64_t i = 0; i < seg.lanes; ++i) {
      if constexpr (kScalar) {
        g.dA_rows[row + i] = dA[0][i];
      } else {
        for (int64_t n = 0; n < N; ++n) g.dA_rows[(row + i) * N + n] = dA[n][i];
      }
      g.dD_rows[row + i] = dD[i];
      g.ddelta_bias_rows[row + i] = ddelta_bias[i];
    }
  }
  S* du = g.du + b * g.sdu[0] + seg.first * g.sdu[1];
  for (int64_t l = 0; l < L; ++l) store_lanes(du + l * g.sdu[2], g.sdu[1], acc[l], seg.lanes);
}

// Checks and pointers of one directional call (the Python wrapper has checked the same with clearer messages).
struct GridCall {
  at::Tensor u, delta, A, B, C, order;
  std::optional<at::Tensor> D, delta_bias;
  bool delta_softplus;

  GridCall(const at::Tensor& u_, const at::Tensor& delta_, const at::Tensor& A_, const at::Tensor& B_,
           const at::Tensor& C_, const std::optional<at::Tensor>& D_, const std::optional<at::Tensor>& bias_,
           const at::Tensor& order_, bool softplus)
      : u(u_), delta(delta_), A(A_.contiguous()), B(B_), C(C_), order(order_.contiguous()),
        D(contiguous_or_none(D_)), delta_bias(contiguous_or_none(bias_)), delta_softplus(softplus) {
    const bool shapes_ok = u.dim() == 3 && delta.dim() == 4 && delta.size(0) == u.size(0) &&
                           delta.size(2) == u.size(1) && delta.size(3) == u.size(2) && A.dim() == 3 &&
                           A.size(0) == delta.size(1) && A.size(1) == u.size(1) && B.dim() == 4 &&
                           B.size(0) == u.size(0) && B.size(1) % A.size(0) == 0 &&
                           u.size(1) % (B.size(1) / A.size(0)) == 0 &&
                           (B.size(2) == A.size(2) || A.size(2) == 1) &&
                           B.size(3) == u.size(2) && C.sizes() == B.sizes() &&
                           (!D || D->sizes() == A.sizes().slice(0, 2)) &&
                           (!delta_bias || delta_bias->sizes() == A.sizes().slice(0, 2)) && order.dim() == 2 &&
                           order.size(0) == A.size(0) && order.size(1) == u.size(2) &&
                           order.scalar_type() == at::kLong;
    TORCH_CHECK(shapes_ok, "directional_scan_cpu: shapes break the contract u (batch, E, L), delta (batch, K, E, L), ",
                "A (K, E, N) or (K, E, 1), B, C (batch, K M, N, L), D, delta_bias (K, E), order (K, L) int64");
    const auto storage = u.scalar_type();
    TORCH_CHECK(storage == at::kFloat || storage == at::kDouble || storage == at::kBFloat16,
                "directional_scan_cpu: u must be float32, bfloat16 or float64, got ", storage);
    const auto compute = storage == at::kDouble ? at::kDouble : at::kFloat;
    for (const at::Tensor* t : {&delta, &B, &C}) {
      TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == storage, "directional_scan_cpu: delta, B, C must be ",
                  "CPU tensors of u's dtype");
    }
    const std::initializer_list<const at::Tensor*> parameters = {&A, optional_ptr(D), optional_ptr(delta_bias)};
    for (const at::Tensor* t : parameters) {
      TORCH_CHECK(!t || (t->device().is_cpu() && t->scalar_type() == compute), "directional_scan_cpu: A, D, ",
                  "delta_bias must be CPU tensors of the compute dtype ", compute);
    }
  }

  template <typename S>
  GridScan<S> pointers() const {
    using T = Compute<S>;
    auto ptr = [](const std::optional<at::Tensor>& t) { return t ? t->data_ptr<T>() : nullptr; };
    GridScan<S> in{reinterpret_cast<const S*>(u.data_ptr()), reinterpret_cast<const S*>(delta.data_ptr()),
                   reinterpret_cast<const S*>(B.data_ptr()), reinterpret_cast<const S*>(C.data_ptr()),
                   A.data_ptr<T>(), ptr(D), ptr(delta_bias), order.data_ptr<int64_t>(), delta_softplus,
                   A.size(2) == 1 && B.size(2) != 1, u.size(0), A.size(0), u.size(1), u.size(2), B.size(2),
                   B.size(1) / A.size(0)};
    for (int i = 0; i < 3; ++i) in.su[i] = u.stride(i);
    for (int i = 0; i < 4; ++i) in.sdelta[i] = delta.stride(i), in.sB[i] = B.stride(i), in.sC[i] = C.stride(i);
    return in;
  }
};

// The directional kernel's storage types: float, bfloat16 (c10::BFloat16 is bit-compatible), double.
template <typename F>
void dispatch_storage(at::ScalarType type, F f) {
  if (type == at::kFloat) {
    f(float{});
  } else if (type == at::kDouble) {
    f(double{});
  } else {
    f(c10::BFloat16{});
  }
}

at::Tensor directional_scan_forward(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                    const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
                                    const std::optional<at::Tensor>& delta_bias, const at::Tensor& order,
                                    bool delta_softplus) {
  const GridCall call(u, delta, A, B, C, D, delta_bias, order, delta_softplus);
  at::Tensor out = at::empty_like(u);  // u's layout
  dispatch_storage(u.scalar_type(), [&](auto tag) {
    using S = decltype(tag);
    const GridScan<S> in = call.pointers<S>();
    const std::vector<Segment> segs = segments(in.channels, in.groups_per_direction);
    const int64_t count = static_cast<int64_t>(segs.size());
    S* out_ptr = reinterpret_cast<S*>(out.data_ptr());
    const int64_t so[3] = {out.stride(0), out.stride(1), out.stride(2)};
    at::parallel_for(0, in.batch * count, 1, [&](int64_t begin, int64_t end) {
      GridScratch<Compute<S>> scratch(in.length, in.state, 0, false);
      for (int64_t unit = begin; unit < end; ++unit) {
        if (in.scalar_decay) {
          grid_forward_segment<S, true>(in, unit / count, segs[unit % count], scratch, out_ptr, so);
        } else {
          grid_forward_segment<S, false>(in, unit / count, segs[unit % count], scratch, out_ptr, so);
        }
      }
    });
  });
  return out;
}

// Returns (du, ddelta, dA, dB, dC, dD, ddelta_bias); dD, ddelta_bias undefined when the input was absent.
std::vector<at::Tensor> directional_scan_backward(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                                  const at::Tensor& B, const at::Tensor& C,
                                                  const std::optional<at::Tensor>& D,
                                                  const std::optional<at::Tensor>& delta_bias,
                                                  const at::Tensor& order, bool delta_softplus,
                                                  const at::Tensor& dout) {
  const GridCall call(u, delta, A, B, C, D, delta_bias, order, delta_softplus);
  TORCH_CHECK(dout.sizes() == u.sizes() && dout.scalar_type() == u.scalar_type(),
              "directional_scan_cpu: dout must be (batch, E, L) of u's dtype");
  const int64_t batch = u.size(0), K = A.size(0), E = u.size(1), L = u.size(2), N = B.size(2), G = B.size(1);
  const auto compute = A.options();
  at::Tensor du = at::empty_like(u), ddelta = at::empty_like(delta);
  at::Tensor dA_rows = at::empty({batch, K, E, A.size(2)}, compute);
  at::Tensor dD_rows = at::empty({batch, K, E}, compute), ddelta_bias_rows = at::empty({batch, K, E}, compute);
  const std::vector<Segment> segs = segments(E, G / K);
  const int64_t count = static_cast<int64_t>(segs.size());
  // Work unit = (batch element, block of segments). dB, dC sum over a group's channels: each block fills its own
  // (G, L, N) slab, summed at the end (one block per batch element when the batch is large enough).
  const int64_t wanted_units = 4 * static_cast<int64_t>(at::get_num_threads());
  const int64_t blocks = std::clamp<int64_t>((wanted_units + batch - 1) / batch, 1, count);
  const int64_t per_block = (count + blocks - 1) / blocks;
  at::Tensor dB_slabs = at::zeros({blocks, batch, G, L, N}, compute), dC_slabs = at::zeros_like(dB_slabs);
  dispatch_storage(u.scalar_type(), [&](auto tag) {
    using S = decltype(tag);
    using T = Compute<S>;
    const GridScan<S> in = call.pointers<S>();
    GridGrads<S> g{reinterpret_cast<const S*>(dout.data_ptr()), {dout.stride(0), dout.stride(1), dout.stride(2)},
                   reinterpret_cast<S*>(du.data_ptr()), reinterpret_cast<S*>(ddelta.data_ptr()),
                   {du.stride(0), du.stride(1), du.stride(2)},
                   {ddelta.stride(0), ddelta.stride(1), ddelta.stride(2), ddelta.stride(3)},
                   dA_rows.data_ptr<T>(), dD_rows.data_ptr<T>(), ddelta_bias_rows.data_ptr<T>()};
    T* dB_base = dB_slabs.data_ptr<T>();
    T* dC_base = dC_slabs.data_ptr<T>();
    const int64_t slab = G * L * N;
    const bool lane_slab = slab * static_cast<int64_t>(sizeof(Half<Pack<T>>)) <= kLaneSlabBytes;
    auto segment = lane_slab ? (in.scalar_decay ? grid_backward_segment<S, true, true>
                                                : grid_backward_segment<S, false, true>)
                             : (in.scalar_decay ? grid_backward_segment<S, true, false>
                                                : grid_backward_segment<S, false, false>);
    at::parallel_for(0, batch * blocks, 1, [&](int64_t begin, int64_t end) {
      GridScratch<T> scratch(L, N, lane_slab ? slab : 0, true);
      Half<Pack<T>>* dB_lanes = scratch.dB_lanes.data();
      Half<Pack<T>>* dC_lanes = scratch.dC_lanes.data();
      for (int64_t unit = begin; unit < end; ++unit) {
        const int64_t b = unit / blocks, block = unit % blocks;
        T* dB = dB_base + (block * batch + b) * slab;
        T* dC = dC_base + (block * batch + b) * slab;
        std::fill(dB_lanes, dB_lanes + scratch.dB_lanes.size(), Half<Pack<T>>{});
        std::fill(dC_lanes, dC_lanes + scratch.dC_lanes.size(), Half<Pack<T>>{});
        for (int64_t i = block * per_block; i < std::min(count, (block + 1) * per_block); ++i) {
          segment(in, g, b, segs[i], scratch, dB, dC);
        }
        for (int64_t j = 0; j < static_cast<int64_t>(scratch.dB_lanes.size()); ++j) {
          dB[j] = horizontal_sum(dB_lanes[j]), dC[j] = horizontal_sum(dC_lanes[j]);
        }
      }
    });
  });
  auto state_major = [&](const at::Tensor& slabs) {
    return (blocks == 1 ? slabs.squeeze(0) : slabs.sum(0)).to(u.scalar_type()).transpose(2, 3);
  };
  return {du,
          ddelta,
          dA_rows.sum(0),
          state_major(dB_slabs),
          state_major(dC_slabs),
          call.D ? dD_rows.sum(0) : at::Tensor(),
          call.delta_bias ? ddelta_bias_rows.sum(0) : at::Tensor()};
}

// ---------------------------------------------------------------------------------------------------------------
// Roofline probe (benchmarks/scan_roofline.py): the directional kernel's float32 arithmetic for `units` channel
// blocks of `length` steps, N states and K directions, with every load and store of tensor data removed (the
// inputs are made up in registers, B_t and C_t are constants), on the same threads and with the same exp, softplus
// and step code, in the same order: each chunk's softplus (and, with `scalar_decay`, its one exp per step, A of shape
// (K, E, 1)) in a pass of their own, then the recurrence. With `backward`, one step is what the backward must do at
// least: recompute the state and its decay, then the reverse step, adding the dB and dC terms per lane.
// arithmetic_probe returns seconds; probe_block, a value that depends on all of its work.
template <bool kBackward>
float probe_block(int64_t L, int64_t N, int64_t K, bool scalar_decay, float seed) {
  using P = Pack<float>;
  const int64_t chunk = std::min(L, kMaxChunk);
  std::vector<P> A(N), h(N), dh(N), dA(N), dB(N), dC(N), dt(chunk), slope(chunk), decay(chunk);
  float sink = 0;
  P lanes;
  for (int64_t i = 0; i < kLanes; ++i) lanes[i] = seed + 0.01f * i;
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t n = 0; n < N; ++n) A[n] = lanes * -(1.0f + n), h[n] = dh[n] = dA[n] = dB[n] = dC[n] = P{};
    P dD = {}, ddelta_bias = {}, out = {};
    for (int64_t t0 = 0; t0 < L; t0 += chunk) {
      const int64_t steps = std::min(chunk, L - t0);
      const auto raw_of = [&](int64_t i) { return lanes + (-2.0f + 1e-4f * static_cast<float>(t0 + i)); };
      element_pass(steps, raw_of, true, scalar_decay, A[0], dt.data(), kBackward ? slope.data() : nullptr,
                   decay.data());
      for (int64_t i = 0; i < steps; ++i) {
        const P x = dt[i] * 0.5f, dt_x = dt[i] * x;
        if constexpr (!kBackward) {
          P y = x * 0.5f;
          for (int64_t n = 0; n < N; ++n) {
            h[n] = (scalar_decay ? decay[i] : exp_pack(dt[i] * A[n])) * h[n] + dt_x * 0.25f;
            y += 0.5f * h[n];
          }
          out += y;
        } else {
          const P dy = x * 0.125f;
          P through = {}, dx = {};
          for (int64_t n = 0; n < N; ++n) {
            const P decay_n = scalar_decay ? decay[i] : exp_pack(dt[i] * A[n]);
            const P h_now = decay_n * h[n] + dt_x * 0.25f;
            const P dh_now = dh[n] + dy * 0.5f;
            if (scalar_decay) {
              through += dh_now * h[n];
            } else {
              const P through_n = dh_now * decay_n * h[n];
              dA[n] += through_n * dt[i];
              through += through_n * A[n];
            }
            dC[n] += dy * h_now;
            dB[n] += dh_now * dt_x;
            dx += dh_now * 0.25f;
            dh[n] = dh_now * decay_n;
            h[n] = h_now;
          }
          if (scalar_decay) {
            through *= decay[i];
            dA[0] += through * dt[i];
            through *= A[0];
          }
          const P ddelta = (through + x * dx) * slope[i];
          out += dy * 0.5f + dt[i] * dx;
          dD += dy * x;
          ddelta_bias += ddelta;
        }
      }
    }
    sink += horizontal_sum(out + dD + ddelta_bias);
    for (int64_t n = 0; n < N; ++n) sink += horizontal_sum(h[n] + dA[n] + dB[n] + dC[n]);
  }
  return sink;
}

double arithmetic_probe(int64_t units, int64_t length, int64_t state, int64_t directions, bool backward,
                        bool scalar_decay) {
  std::vector<float> sinks(units);
  const auto start = std::chrono::steady_clock::now();
  at::parallel_for(0, units, 1, [&](int64_t begin, int64_t end) {
    for (int64_t unit = begin; unit < end; ++unit) {
      const float seed = 1.0f + 1e-3f * static_cast<float>(unit);
      sinks[unit] = backward ? probe_block<true>(length, state, directions, scalar_decay, seed)
                             : probe_block<false>(length, state, directions, scalar_decay, seed);
    }
  });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  volatile float keep = std::accumulate(sinks.begin(), sinks.end(), 0.0f);  // the work cannot be dropped
  (void)keep;
  return seconds;
}

}  // namespace

// depthwise_cpu.cpp, compiled into the same extension
at::Tensor depthwise_forward(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                             const std::optional<at::Tensor>& radii);
at::Tensor depthwise_weight_grad(const at::Tensor& input, const at::Tensor& grad_out, int64_t kernel,
                                 const std::optional<at::Tensor>& radii);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "ssmamba CPU kernels: selective scan (forward, backward; B, C and their grads in (batch, G, N, L)) and "
            "the depthwise convolution and its weight gradient";
  m.def("forward", &selective_scan_forward, "selective scan forward: (out, last_state)");
  m.def("backward", &selective_scan_backward, "selective scan backward: grads of every input");
  m.def("directional_forward", &directional_scan_forward, "directional scans of a token grid, summed: out");
  m.def("directional_backward", &directional_scan_backward, "directional scans backward: grads of every input");
  m.def("arithmetic_probe", &arithmetic_probe, "seconds of the directional kernel's arithmetic without its loads");
  m.attr("lanes") = kLanes;  // channels per SIMD pack: one channel block of the directional kernel
  m.def("depthwise_forward", &depthwise_forward, "stride-1 'same' depthwise conv, channels-last");
  m.def("depthwise_weight_grad", &depthwise_weight_grad, "weight gradient of a stride-1 'same' depthwise conv");
}

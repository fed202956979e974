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
// Layout: B and C are copied once to (batch, G, L, Np), Np = N rounded up to kLanes, so that one time step's states
// are adjacent and split into whole packs. Padded lanes have A = B = C = 0: their decay is 1, their state stays 0,
// and they add nothing anywhere.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <vector>

#if !defined(__GNUC__) && !defined(__clang__)
#error "selective_scan_cpu.cpp uses GCC/Clang vector extensions; build it with g++ or clang++"
#endif

namespace {

// ---------------------------------------------------------------------------------------------------------------
// Packs of kLanes values: explicit SIMD through vector extensions, so that speed does not hang on whether the
// auto-vectoriser accepts a loop. 8 floats = one AVX2 register; the compiler splits or merges for other targets.
constexpr int64_t kLanes = 8;
typedef float f32_pack __attribute__((vector_size(kLanes * sizeof(float))));
typedef double f64_pack __attribute__((vector_size(kLanes * sizeof(double))));
typedef int32_t i32_pack __attribute__((vector_size(kLanes * sizeof(int32_t))));
typedef float f32_half __attribute__((vector_size(kLanes / 2 * sizeof(float))));

template <typename T>
struct PackOf;
template <>
struct PackOf<float> { using type = f32_pack; };
template <>
struct PackOf<double> { using type = f64_pack; };
template <typename T>
using Pack = typename PackOf<T>::type;

template <typename T>
inline Pack<T> splat(T value) { return Pack<T>{} + value; }
template <typename T>
inline Pack<T> load(const T* p) { Pack<T> v; std::memcpy(&v, p, sizeof v); return v; }  // unaligned
template <typename T>
inline void store(T* p, const Pack<T>& v) { std::memcpy(p, &v, sizeof v); }

// The first n <= kLanes values, zeros after: the last pack of a row whose length is not a multiple of kLanes.
template <typename T>
inline Pack<T> load_first(const T* p, int64_t n) {
  if (n == kLanes) return load(p);
  T lanes[kLanes] = {};
  std::copy(p, p + n, lanes);
  return load(lanes);
}

template <typename T>
inline void store_first(T* p, const Pack<T>& v, int64_t n) {
  if (n == kLanes) return store(p, v);
  T lanes[kLanes];
  store(lanes, v);
  std::copy(lanes, lanes + n, p);
}

inline float horizontal_sum(const f32_pack& v) {
  f32_half low, high;
  std::memcpy(&low, &v, sizeof low);
  std::memcpy(&high, reinterpret_cast<const char*>(&v) + sizeof low, sizeof high);
  const f32_half pairs = low + high;
  return (pairs[0] + pairs[2]) + (pairs[1] + pairs[3]);
}

inline double horizontal_sum(const f64_pack& v) {
  double sum = 0;
  for (int64_t i = 0; i < kLanes; ++i) sum += v[i];
  return sum;
}

// exp of a float pack. Range reduction x = k ln2 + r, |r| <= ln2 / 2, then a degree-7 polynomial for e^r (max
// error about 1 ulp). Below kLowest the result is 0 (a fully forgotten state); above kHighest it is +inf.
inline f32_pack exp_pack(f32_pack x) {
  constexpr float kLowest = -87.0f, kHighest = 88.0f;
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;  // ln 2 split in two so that k * kLn2Hi is exact
  constexpr float kLn2Lo = -2.12194440e-4f;
  constexpr float kRoundingShift = 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to an integer
  const f32_pack zero = {};
  f32_pack xc = x < kLowest ? zero + kLowest : x;
  xc = xc > kHighest ? zero + kHighest : xc;
  const f32_pack k = (xc * kLog2e + kRoundingShift) - kRoundingShift;
  const f32_pack r = (xc - k * kLn2Hi) - k * kLn2Lo;
  f32_pack p = zero + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const i32_pack exponent_bits = (__builtin_convertvector(k, i32_pack) + 127) << 23;  // 2^k, k in [-126, 127]
  const f32_pack result = p * reinterpret_cast<const f32_pack&>(exponent_bits);
  const f32_pack bounded = x > kHighest ? zero + std::numeric_limits<float>::infinity() : result;
  return x < kLowest ? zero : bounded;  // NaN fails both tests and propagates through p
}

// log1p of a float pack with every lane in [0, 1] (all that softplus needs). With u = 1 + y rounded,
// log1p(y) = log(u) * y / (u - 1) cancels the rounding of u (Goldberg); log(u), u in [1, 2], is m - 1 plus a
// degree-8 polynomial after folding u above sqrt(2) to u / 2 (max error about 3 ulp).
inline f32_pack log1p_unit_pack(f32_pack y) {
  const f32_pack zero = {};
  const f32_pack u = 1.0f + y;
  const auto folded = u > 1.41421356f;
  const f32_pack e = folded ? zero + 1.0f : zero;
  const f32_pack x = (folded ? u * 0.5f : u) - 1.0f;
  const f32_pack x2 = x * x;
  f32_pack p = zero + 7.0376836292e-2f;
  p = p * x - 1.1514610310e-1f;
  p = p * x + 1.1676998740e-1f;
  p = p * x - 1.2420140846e-1f;
  p = p * x + 1.4249322787e-1f;
  p = p * x - 1.6668057665e-1f;
  p = p * x + 2.0000714765e-1f;
  p = p * x - 2.4999993993e-1f;
  p = p * x + 3.3333331174e-1f;
  const f32_pack log_u = (x + ((p * x * x2 + e * -2.12194440e-4f) - 0.5f * x2)) + e * 0.693359375f;
  const f32_pack rounded = u - 1.0f;
  return rounded == 0.0f ? y : log_u * (y / (rounded == 0.0f ? zero + 1.0f : rounded));
}

// float64 is for gradcheck and for users who ask for it: exactness over speed, one libm call per lane.
template <typename F>
inline f64_pack per_lane(f64_pack x, F f) {
  for (int64_t i = 0; i < kLanes; ++i) x[i] = f(x[i]);
  return x;
}
inline f64_pack exp_pack(f64_pack x) { return per_lane(x, [](double v) { return std::exp(v); }); }
inline f64_pack log1p_unit_pack(f64_pack y) { return per_lane(y, [](double v) { return std::log1p(v); }); }

// sigmoid and softplus are computed from e = exp(-|x|) in (0, 1], which never overflows.
template <typename T>
inline Pack<T> exp_minus_abs(const Pack<T>& x) { return exp_pack(x < 0 ? x : -x); }
template <typename T>
inline Pack<T> sigmoid_pack(const Pack<T>& x, const Pack<T>& e) { return (x >= 0 ? splat<T>(1) : e) / (1 + e); }

// ---------------------------------------------------------------------------------------------------------------
// Row kernels. One row = one (batch, channel) pair; K = Np / kLanes packs of state.

// Raw pointers of one call; optional ones are null. B, C: (batch, G, L, Np); A: (dim, Np); the rest (batch, dim, L).
template <typename T>
struct ScanInputs {
  const T *u, *delta, *A, *B, *C;
  const T *D, *z, *delta_bias;
  bool delta_softplus;
  int64_t batch, dim, length, packs, groups;

  int64_t row(int64_t b, int64_t d) const { return (b * dim + d) * length; }
  int64_t state_width() const { return packs * kLanes; }
  int64_t group_of(int64_t b, int64_t d) const { return (b * groups + d / (dim / groups)) * length * state_width(); }
};

// Element-wise inputs of one row, pack by pack: dt (L,), and with `slope` softplus' derivative d dt / d delta;
// with z, `gate` = silu(z) (forward, `gate_is_silu`) or sigmoid(z) (backward).
template <typename T>
void prepare_row(const ScanInputs<T>& in, int64_t b, int64_t d, bool gate_is_silu, T* dt, T* slope, T* gate) {
  const int64_t r = in.row(b, d);
  const T bias = in.delta_bias ? in.delta_bias[d] : T(0);
  for (int64_t t = 0; t < in.length; t += kLanes) {
    const int64_t n = std::min(kLanes, in.length - t);
    const Pack<T> raw = load_first(in.delta + r + t, n) + bias;
    if (in.delta_softplus) {
      const Pack<T> e = exp_minus_abs<T>(raw);
      store_first(dt + t, (raw > 0 ? raw : Pack<T>{}) + log1p_unit_pack(e), n);
      if (slope) store_first(slope + t, sigmoid_pack<T>(raw, e), n);
    } else {
      store_first(dt + t, raw, n);
    }
    if (in.z) {
      const Pack<T> z = load_first(in.z + r + t, n);
      const Pack<T> sig = sigmoid_pack<T>(z, exp_minus_abs<T>(z));
      store_first(gate + t, gate_is_silu ? z * sig : sig, n);
    }
  }
}

// h <- exp(dt A) h + dt x B over all packs; returns the pack whose lanes sum to C . h.
template <typename T>
inline Pack<T> scan_step(const Pack<T>* A, const T* B_t, const T* C_t, T dt, T x, Pack<T>* h, int64_t K) {
  const T dt_x = dt * x;
  Pack<T> y = {};
  for (int64_t k = 0; k < K; ++k) {
    h[k] = exp_pack(dt * A[k]) * h[k] + dt_x * load(B_t + k * kLanes);
    y += load(C_t + k * kLanes) * h[k];
  }
  return y;
}

template <typename T>
void load_A(const ScanInputs<T>& in, int64_t d, Pack<T>* A) {
  for (int64_t k = 0; k < in.packs; ++k) A[k] = load(in.A + (d * in.packs + k) * kLanes);
}

// Per-thread scratch of the forward.
template <typename T>
struct ForwardScratch {
  std::vector<Pack<T>> A, h;
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
  Pack<T>* h = s.h.data();
  load_A(in, d, s.A.data());
  std::fill(h, h + K, Pack<T>{});
  for (int64_t t = 0; t < in.length; ++t) {
    const T y = horizontal_sum(scan_step(s.A.data(), B + t * Np, C + t * Np, s.dt[t], u[t], h, K)) + skip * u[t];
    out[r + t] = in.z ? y * s.gate[t] : y;
  }
  for (int64_t k = 0; k < K; ++k) store(last_state + (b * in.dim + d) * Np + k * kLanes, h[k]);
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
  std::vector<Pack<T>> A, states, decays, dh, dA;
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
  Pack<T>* states = s.states.data();
  std::fill(states, states + K, Pack<T>{});
  for (int64_t t = 0; t < in.length; ++t) {
    const T dt = s.dt[t], dt_x = dt * u[t];
    Pack<T> y = {};
    for (int64_t k = 0; k < K; ++k) {
      const Pack<T> decay = exp_pack(dt * s.A[k]);
      const Pack<T> h = decay * states[t * K + k] + dt_x * load(B + t * Np + k * kLanes);
      s.decays[t * K + k] = decay;
      states[(t + 1) * K + k] = h;
      if constexpr (kWithOutput) y += load(C + t * Np + k * kLanes) * h;
    }
    if constexpr (kWithOutput) s.y[t] = horizontal_sum(y) + skip * u[t];
  }
}

template <typename T>
void backward_row(const ScanInputs<T>& in, const ScanGrads<T>& g, int64_t b, int64_t d, BackwardScratch<T>& s,
                  T* dB, T* dC) {
  using P = Pack<T>;
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
    dh[k] = g.dlast ? load(g.dlast + (b * in.dim + d) * Np + k * kLanes) : P{};
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
      const int64_t at = t * Np + k * kLanes;
      const P B_k = load(B + at);
      const P decay = s.decays[t * K + k];
      const P dh_now = dh[k] + dy * load(C + at);                 // everything that reaches h_t
      const P through_decay = dh_now * decay * states[t * K + k];  // d loss / d (dt A), per state
      store(dC + at, load(dC + at) + dy * states[(t + 1) * K + k]);
      store(dB + at, load(dB + at) + dh_now * dt_x);
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
  for (int64_t k = 0; k < K; ++k) store(g.dA_rows + (b * in.dim + d) * Np + k * kLanes, dA[k]);
  g.dD_rows[b * in.dim + d] = dD;
  g.ddelta_bias_rows[b * in.dim + d] = ddelta_bias;
}

// ---------------------------------------------------------------------------------------------------------------
// Entry points: layout changes and checks around the row kernels.

int64_t padded_state(int64_t N) { return (N + kLanes - 1) / kLanes * kLanes; }

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
                         Np / kLanes,     B.size(1)};
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

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "ssmamba selective scan, CPU kernel (forward, backward); B, C and their grads in (batch, G, N, L)";
  m.def("forward", &selective_scan_forward, "selective scan forward: (out, last_state)");
  m.def("backward", &selective_scan_backward, "selective scan backward: grads of every input");
}

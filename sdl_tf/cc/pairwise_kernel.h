// Math of the SDL pairwise term (paper eq. 2) for one image, with no TensorFlow dependency so
// that it can be benchmarked on its own (see pairwise_op.cc for the op and the definition).
//
// For one image with scores s (C labels) and positive set P:
//   pair_sum = sum_{j in P, k not in P} softplus(x_jk),  x_jk = s_k - s_j
//   d pair_sum / d s_k =  sum_j sigmoid(x_jk)   (k negative)
//   d pair_sum / d s_j = -sum_k sigmoid(x_jk)   (j positive)
// Both come from one pass over the pairs. With e = exp(-|x|) and r = 1 / (1 + e):
//   softplus(x) = max(x, 0) + log1p(e),  sigmoid(x) = r if x >= 0 else e * r
// exp(-|x|) <= 1 never overflows, so large score gaps give finite values and gradients.
//
// Per pair the cost is a handful of vector instructions, no transcendental function:
// * exp(-|x|) = min(E_k * F_j, F_k * E_j) with E = exp(s - mid), F = exp(mid - s) computed once
//   per label (the smaller of exp(x) and exp(-x) is exp(-|x|)). Used when the image's scores
//   are finite and span at most kFactorRange, so that no factor or product overflows; other
//   images take one exp per pair.
// * sum_k log1p(e_k) = log1p(prod_k (1 + e_k) - 1) over groups of kGroup packets: 1 + e is in
//   (1, 2], so a group's product is at most 2^kGroup; one log1p per kGroup pairs per lane
//   instead of one per pair. The product is carried as its excess over 1 so that small e
//   (large score gaps) keep their relative precision.
// * r = 1 / (1 + e) by a reciprocal estimate refined by one Newton step where the CPU has one
//   (AVX-512: 14-bit estimate -> ~1 ulp), else a division.
// Positive labels and the padding up to a whole number of packets enter the pass as neutral
// lanes (score -inf, E = F = 0): every one of their terms is exactly 0, so the pass runs over
// the image's whole score row without packing the negatives or a scalar tail loop.
#ifndef SDL_TF_CC_PAIRWISE_KERNEL_H_
#define SDL_TF_CC_PAIRWISE_KERNEL_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "Eigen/Core"

namespace sdl_tf {

namespace ei = ::Eigen::internal;

// Widest score range (max - min) of an image that uses the factored exp: each factor is then
// within exp(+-kFactorRange / 2) and each product within exp(+-kFactorRange), far from overflow
// (float: exp(88), double: exp(709)).
template <typename T>
constexpr T kFactorRange = T(80);
template <>
constexpr double kFactorRange<double> = 700.0;

// Packets per log1p of a product of (1 + e) values, each in (1, 2]: at most 2^8.
constexpr int64_t kGroup = 8;

template <typename Packet>
inline Packet Reciprocal(const Packet& u) {
  return ei::pdiv(ei::pset1<Packet>(typename ei::unpacket_traits<Packet>::type(1)), u);
}

#if defined(__AVX512F__)
// 1 / u for u in [1, 2]: 14-bit estimate, one Newton step r * (2 - u * r) -> ~1 ulp. About
// 3x the throughput of a division, the slowest instruction of the pass.
template <>
inline ei::Packet16f Reciprocal<ei::Packet16f>(const ei::Packet16f& u) {
  const __m512 r = _mm512_rcp14_ps(u);
  return _mm512_mul_ps(r, _mm512_fnmadd_ps(u, r, _mm512_set1_ps(2.0f)));
}
#endif

// Per-thread buffers of `ImagePairs`, reused across images.
template <typename T>
struct ImageScratch {
  std::vector<T> neg;          // scores, -inf at positives and padding
  std::vector<T> exp_neg;      // E = exp(neg - mid), 0 at positives and padding
  std::vector<T> exp_neg_inv;  // F = exp(mid - neg), 0 at positives and padding
  std::vector<T> d_neg;        // sum_j sigmoid(x_jk) per label
  std::vector<int64_t> pos_index;  // the image's positive labels (set by ImagePairs)
  std::vector<T> pos_scores;       // their scores, then their derivatives
  std::vector<double> mean;        // of PositiveVariance
};

// One row of pairs: the positive score s_j (with E_j = exp_pos, F_j = exp_pos_inv when
// kFactored) against the n labels of the image (n a multiple of the packet size). Adds
// sigmoid(x_k) to d_neg[k], returns sum_k softplus(x_k) and sets *sig_sum = sum_k sigmoid.
template <typename T, bool kFactored>
double PairRow(const T* neg, const T* exp_neg, const T* exp_neg_inv, int64_t n, T s_j,
               T exp_pos, T exp_pos_inv, T* d_neg, double* sig_sum) {
  using Packet = typename ei::packet_traits<T>::type;
  constexpr int64_t kSize = ei::unpacket_traits<Packet>::size;
  const Packet p_sj = ei::pset1<Packet>(s_j);
  const Packet p_ej = ei::pset1<Packet>(exp_pos);
  const Packet p_fj = ei::pset1<Packet>(exp_pos_inv);
  const Packet p_one = ei::pset1<Packet>(T(1));
  const Packet p_zero = ei::pzero(p_one);
  Packet hinge_acc = p_zero, log_acc = p_zero, sig_acc = p_zero;
  for (int64_t k = 0; k < n;) {
    // prod (1 + e) - 1 over the group, kept as the excess over 1: (1 + E)(1 + e) - 1 =
    // E + e + E * e loses no relative precision when the e are small (a product of rounded
    // 1 + e would lose the low bits of every e).
    Packet excess = p_zero;
    for (const int64_t end = std::min(n, k + kGroup * kSize); k < end; k += kSize) {
      const Packet x = ei::psub(ei::ploadu<Packet>(neg + k), p_sj);
      Packet e;
      if constexpr (kFactored) {
        e = ei::pmin(ei::pmul(ei::ploadu<Packet>(exp_neg + k), p_fj),
                     ei::pmul(ei::ploadu<Packet>(exp_neg_inv + k), p_ej));
      } else {
        // exp(-inf) may come out as a denormal instead of 0 here; a neutral lane then adds
        // ~1e-38, far below the precision of the sum.
        e = ei::pexp(ei::pnegate(ei::pabs(x)));
      }
      excess = ei::pmadd(excess, e, ei::padd(excess, e));
      hinge_acc = ei::padd(hinge_acc, ei::pmax(x, p_zero));  // max(-inf, 0) = 0
      const Packet r = Reciprocal(ei::padd(p_one, e));
      const Packet sig = ei::pselect(ei::pcmp_lt(x, p_zero), ei::pmul(e, r), r);
      sig_acc = ei::padd(sig_acc, sig);
      ei::pstoreu(d_neg + k, ei::padd(ei::ploadu<Packet>(d_neg + k), sig));
    }
    log_acc = ei::padd(log_acc, ei::plog1p(excess));
  }
  *sig_sum = static_cast<double>(ei::predux(sig_acc));
  return static_cast<double>(ei::predux(hinge_acc)) + static_cast<double>(ei::predux(log_acc));
}

// The pairwise term of one image: returns pair_sum and writes d[0..labels).
//
// Args:
//   s, y: the image's scores and targets (y > 0.5 = positive), `labels` values each.
//   scratch: reused buffers.
//   d: output, d pair_sum / d s.
template <typename T>
double ImagePairs(const T* s, const T* y, int64_t labels, ImageScratch<T>* scratch, T* d) {
  using Packet = typename ei::packet_traits<T>::type;
  constexpr int64_t kSize = ei::unpacket_traits<Packet>::size;
  constexpr T kInf = std::numeric_limits<T>::infinity();
  auto& pos_index = scratch->pos_index;
  pos_index.clear();
  for (int64_t c = 0; c < labels; ++c) {
    if (y[c] > T(0.5)) pos_index.push_back(c);
  }
  const int64_t num_pos = static_cast<int64_t>(pos_index.size());
  if (num_pos == 0 || num_pos == labels) {  // no pairs
    std::fill(d, d + labels, T(0));
    return 0.0;
  }
  const int64_t n = (labels + kSize - 1) / kSize * kSize;
  auto& neg = scratch->neg;
  neg.resize(n);
  std::memcpy(neg.data(), s, labels * sizeof(T));
  std::fill(neg.begin() + labels, neg.end(), -kInf);
  // Range and finiteness of the scores in one pass (x - x is NaN for inf and NaN).
  Packet p_lo = ei::pset1<Packet>(kInf), p_hi = ei::pset1<Packet>(-kInf);
  Packet p_nan = ei::pzero(p_lo);
  for (int64_t k = 0; k + kSize <= labels; k += kSize) {
    const Packet v = ei::ploadu<Packet>(s + k);
    p_lo = ei::pmin(p_lo, v);
    p_hi = ei::pmax(p_hi, v);
    p_nan = ei::padd(p_nan, ei::psub(v, v));
  }
  T lo = ei::predux_min(p_lo), hi = ei::predux_max(p_hi), nan = ei::predux(p_nan);
  for (int64_t k = labels / kSize * kSize; k < labels; ++k) {
    lo = std::min(lo, s[k]);
    hi = std::max(hi, s[k]);
    nan += s[k] - s[k];
  }
  const bool factored = nan == T(0) && hi - lo <= kFactorRange<T>;
  const T mid = lo + (hi - lo) / 2;
  auto& pos_scores = scratch->pos_scores;
  pos_scores.resize(num_pos);
  for (int64_t i = 0; i < num_pos; ++i) {
    pos_scores[i] = s[pos_index[i]];
    neg[pos_index[i]] = -kInf;
  }
  auto& exp_neg = scratch->exp_neg;
  auto& exp_neg_inv = scratch->exp_neg_inv;
  if (factored) {
    exp_neg.resize(n);
    exp_neg_inv.resize(n);
    const Packet p_mid = ei::pset1<Packet>(mid);
    for (int64_t k = 0; k < n; k += kSize) {
      const Packet v = ei::psub(ei::ploadu<Packet>(neg.data() + k), p_mid);
      ei::pstoreu(exp_neg.data() + k, ei::pexp(v));
      ei::pstoreu(exp_neg_inv.data() + k, ei::pexp(ei::pnegate(v)));
    }
    // Neutral lanes: E = F = 0 gives e = min(0 * F_j, 0 * E_j) = 0 exactly.
    for (const int64_t c : pos_index) exp_neg[c] = exp_neg_inv[c] = T(0);
    std::fill(exp_neg.begin() + labels, exp_neg.end(), T(0));
    std::fill(exp_neg_inv.begin() + labels, exp_neg_inv.end(), T(0));
  }
  auto& d_neg = scratch->d_neg;
  d_neg.assign(n, T(0));
  double total = 0.0;
  for (int64_t i = 0; i < num_pos; ++i) {
    const T s_j = pos_scores[i];
    double sig_sum = 0.0;
    if (factored) {
      total += PairRow<T, true>(neg.data(), exp_neg.data(), exp_neg_inv.data(), n, s_j,
                                std::exp(s_j - mid), std::exp(mid - s_j), d_neg.data(),
                                &sig_sum);
    } else {
      total += PairRow<T, false>(neg.data(), nullptr, nullptr, n, s_j, T(0), T(0),
                                 d_neg.data(), &sig_sum);
    }
    pos_scores[i] = static_cast<T>(-sig_sum);  // reused as d of the positive
  }
  std::memcpy(d, d_neg.data(), labels * sizeof(T));
  for (int64_t i = 0; i < num_pos; ++i) d[pos_index[i]] = pos_scores[i];
  return total;
}

// Sum over the d dimensions of the unbiased variance of the positives' label vectors (SDW, eq. 3,
// without the 1 +): two passes in double; 0 when there are fewer than 2 positives.
//
// Args: vectors: (C, dim) row-major label vectors; pos_index: the image's positive labels.
template <typename T>
double PositiveVariance(const T* vectors, int64_t dim, const std::vector<int64_t>& pos_index,
                        std::vector<double>* mean) {
  const int64_t num_pos = static_cast<int64_t>(pos_index.size());
  if (num_pos < 2) return 0.0;
  mean->assign(dim, 0.0);
  for (const int64_t c : pos_index) {
    const T* v = vectors + c * dim;
    for (int64_t i = 0; i < dim; ++i) (*mean)[i] += v[i];
  }
  for (int64_t i = 0; i < dim; ++i) (*mean)[i] /= static_cast<double>(num_pos);
  double total = 0.0;
  for (const int64_t c : pos_index) {
    const T* v = vectors + c * dim;
    for (int64_t i = 0; i < dim; ++i) {
      const double centred = v[i] - (*mean)[i];
      total += centred * centred;
    }
  }
  return total / static_cast<double>(num_pos - 1);
}

}  // namespace sdl_tf

#endif  // SDL_TF_CC_PAIRWISE_KERNEL_H_

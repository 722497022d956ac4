/* The CNTK / CNN-GP recursion without pooling and its closed-form adjoint, fused: one pass per layer over
 * cache-sized chunks of pairs (see cntk_fast.py for the formulas; this file computes exactly the same).
 *
 * Block layout: S, g_c, g_s are (P, A, B) with P = h1*w1 first-layer positions; per-layer variance roots are
 * (h_l, w_l, A) for the rows and (h_l, w_l, B) for the columns, layers concatenated. Each thread copies a chunk
 * of pairs into a private (positions, pairs) workspace and runs every layer on it, so the maps stay in cache.
 * Built as float (arccos by a minimax polynomial, |error| <= 2e-8, vectorised) and double (libm acos).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

#define INV_2PI 0.15915494309189535
#define PI_ 3.14159265358979323846

static inline float acos_f(float x) {
    /* Abramowitz & Stegun 4.4.46 on |x|, reflected for x < 0 */
    float ax = fabsf(x);
    float p = -0.0012624911f;
    p = p * ax + 0.0066700901f;
    p = p * ax - 0.0170881256f;
    p = p * ax + 0.0308918810f;
    p = p * ax - 0.0501743046f;
    p = p * ax + 0.0889789874f;
    p = p * ax - 0.2145988016f;
    p = p * ax + 1.5707963050f;
    float r = sqrtf(1.0f - ax) * p;
    return x < 0.0f ? (float)PI_ - r : r;
}

static inline double acos_d(double x) { return acos(x); }

/* out[y][x][k] = sum_{i,j<q} in[y+i-off][x+j-off][k] (entries outside `in` are 0), times `scale` */
#define DEFINE_BOX(T)                                                                                        \
    static void box_##T(const T *in, int hi, int wi, T *out, int ho, int wo, int q, int off, int m, T scale) { \
        for (int y = 0; y < ho; y++)                                                                         \
            for (int x = 0; x < wo; x++) {                                                                   \
                T *o = out + ((size_t)y * wo + x) * m;                                                       \
                for (int k = 0; k < m; k++) o[k] = 0;                                                        \
                for (int i = 0; i < q; i++) {                                                                \
                    int yy = y + i - off;                                                                    \
                    if (yy < 0 || yy >= hi) continue;                                                        \
                    for (int j = 0; j < q; j++) {                                                            \
                        int xx = x + j - off;                                                                \
                        if (xx < 0 || xx >= wi) continue;                                                    \
                        const T *s = in + ((size_t)yy * wi + xx) * m;                                        \
                        for (int k = 0; k < m; k++) o[k] += s[k];                                            \
                    }                                                                                        \
                }                                                                                            \
                for (int k = 0; k < m; k++) o[k] *= scale;                                                   \
            }                                                                                                \
    }
DEFINE_BOX(float)
DEFINE_BOX(double)

/* geometry of layer l: same -> h1 x w1; valid -> shrinks by q-1 per layer */
static inline int lsize(int s1, int l, int q, int same) { return same ? s1 : s1 - l * (q - 1); }

/* the forward element-wise pass of one position of a chunk (stores chosen by the caller) */
#define FWD_BODY(T, ACOS, SQRT, STORE)                                                                                   \
                    for (int k = 0; k < m; k++) {                                                             \
                        T n = na * rBp[k];                                                                    \
                        T rho = s[k] / n;                                                                     \
                        rho = rho > 1 ? 1 : (rho < -1 ? -1 : rho);                                            \
                        T kk0 = (T)0.5 - ACOS(rho) * (T)INV_2PI;                                              \
                        T kk1 = n * (SQRT((1 - rho) * (1 + rho)) * (T)INV_2PI + kk0 * rho);                   \
                        orho[k] = rho; ok0[k] = kk0; STORE;                                                   \
                    }

#define DEFINE_RECURSION(T, ACOS, SQRT)                                                                            \
void cntk_block_##T(int depth, int q, int same, int ntk, int h1, int w1, int A, int B, double scale_d,         \
                    double in_dim, int chunk, int threads, const T *S, const T *ra, const T *rb, const T *ia,  \
                    const T *ib, T *K, T *gc, T *gs, T *gsb) {                                               \
    const T scale = (T)scale_d, eps = (sizeof(T) == 4) ? (T)1.1920929e-07 : (T)2.220446049250313e-16;        \
    const int P1 = h1 * w1, grad = gc != NULL, sym = gsb != NULL; /* sym: also dK/ds_b */                 \
    size_t off_a[64], off_b[64], hs[64], ws[64];                                                              \
    size_t oa = 0, ob = 0;                                                                                    \
    for (int l = 0; l < depth; l++) {                                                                         \
        hs[l] = lsize(h1, l, q, same); ws[l] = lsize(w1, l, q, same);                                         \
        off_a[l] = oa; off_b[l] = ob; oa += hs[l] * ws[l] * A; ob += hs[l] * ws[l] * B;                       \
    }                                                                                                         \
    const int fwd_off = same ? q / 2 : 0, adj_off = same ? q / 2 : q - 1;                                     \
    const long n_pairs = (long)A * B;                                                                         \
    const long per_row = (B + chunk - 1) / chunk; /* a chunk: one row a, up to `chunk` consecutive columns */ \
    const long n_chunks = (long)A * per_row;                                                                  \
    _Pragma("omp parallel num_threads(threads)")                                                              \
    {                                                                                                         \
        size_t map = (size_t)P1 * chunk;                                                                      \
        /* saved per layer: rho, k0, theta (3 maps); work: S, theta, a, b (4 maps) + adjoint 4 maps */        \
        T *mem = (T *)malloc(sizeof(T) * map * (3 * depth + 9));                                              \
        T *sv = mem, *w0 = mem + 3 * depth * map;                                                             \
        T *cs = w0, *ct = w0 + map, *wa = w0 + 2 * map, *wb = w0 + 3 * map;                                   \
        T *g1 = w0 + 4 * map, *g0 = w0 + 5 * map, *gt = w0 + 6 * map, *gv = w0 + 7 * map, *gw = w0 + 8 * map;  \
                                                                                                              \
        _Pragma("omp for schedule(dynamic)")                                                                  \
        for (long c = 0; c < n_chunks; c++) {                                                                 \
            const int a = (int)(c / per_row), b0 = (int)(c % per_row) * chunk;                                \
            const int m = b0 + chunk <= B ? chunk : B - b0;                                                   \
            const long k0p = (long)a * B + b0; /* the chunk's pairs are consecutive in (A, B) */              \
            for (int p = 0; p < P1; p++) {                                                                    \
                const T *src = S + (size_t)p * n_pairs + k0p; /* pairs of a chunk are consecutive in (A, B) */ \
                memcpy(cs + (size_t)p * m, src, sizeof(T) * m);                                               \
            }                                                                                                 \
            if (ntk) memcpy(ct, cs, sizeof(T) * (size_t)P1 * m);                                              \
            T *res = NULL;                                                                                    \
            for (int l = 0; l < depth; l++) {                                                                 \
                const int Pl = (int)(hs[l] * ws[l]);                                                          \
                const T *rA = ra + off_a[l], *rB = rb + off_b[l];                                             \
                T *srho = sv + (size_t)(3 * l) * map, *sk0 = srho + map, *sth = sk0 + map;                    \
                const int last = l == depth - 1;                                                              \
                if (ntk) memcpy(sth, ct, sizeof(T) * (size_t)Pl * m);                                         \
                for (int p = 0; p < Pl; p++) {                                                                \
                    const T *restrict s = cs + (size_t)p * m, *restrict th = ct + (size_t)p * m;                                \
                    T *restrict orho = srho + (size_t)p * m, *restrict ok0 = sk0 + (size_t)p * m;                               \
                    T *restrict o1 = wa + (size_t)p * m, *restrict o2 = wb + (size_t)p * m;                                     \
                    const T na = rA[(size_t)p * A + a], *restrict rBp = rB + (size_t)p * B + b0;                       \
                    /* one branch-free loop per case, so that each vectorises */                              \
                    if (last && ntk) { FWD_BODY(T, ACOS, SQRT, o1[k] = kk1 + kk0 * th[k]) }                                  \
                    else if (ntk) { FWD_BODY(T, ACOS, SQRT, o1[k] = kk1) for (int k = 0; k < m; k++) o2[k] = ok0[k] * th[k]; }                            \
                    else { FWD_BODY(T, ACOS, SQRT, o1[k] = kk1) }                                                            \
                }                                                                                             \
                if (last) { res = wa; break; }                                                                \
                int hn = (int)hs[l + 1], wn = (int)ws[l + 1];                                                 \
                box_##T(wa, (int)hs[l], (int)ws[l], cs, hn, wn, q, fwd_off, m, scale);                        \
                if (ntk) {                                                                                    \
                    box_##T(wb, (int)hs[l], (int)ws[l], ct, hn, wn, q, fwd_off, m, scale);                    \
                    for (size_t e = 0; e < (size_t)hn * wn * m; e++) ct[e] += cs[e];                          \
                }                                                                                             \
            }                                                                                                 \
            {                                                                                                 \
                const int PD = (int)(hs[depth - 1] * ws[depth - 1]);                                          \
                const T wgt = (T)1 / (T)PD;                                                                   \
                for (int k = 0; k < m; k++) {                                                                 \
                    T acc = 0;                                                                                \
                    for (int p = 0; p < PD; p++) acc += res[(size_t)p * m + k];                               \
                    K[k0p + k] = acc * wgt;                                                                   \
                }                                                                                             \
                if (grad) {                                                                                   \
                    T *srho = sv + (size_t)(3 * (depth - 1)) * map, *sk0 = srho + map, *sth = sk0 + map;      \
                    for (size_t e = 0; e < (size_t)PD * m; e++) {                                             \
                        g1[e] = wgt;                                                                          \
                        if (ntk) { g0[e] = wgt * sth[e]; gt[e] = wgt * sk0[e]; }                              \
                        gv[e] = 0; gw[e] = 0;                                                                 \
                    }                                                                                         \
                }                                                                                             \
            }                                                                                                 \
            if (!grad) continue;                                                                              \
            for (int l = depth - 1; l >= 0; l--) {                                                            \
                const int Pl = (int)(hs[l] * ws[l]);                                                          \
                const T *rA = ra + off_a[l], *rB = rb + off_b[l], *iA = ia + off_a[l];                        \
                const T *iB = sym ? ib + off_b[l] : NULL;                                                     \
                T *srho = sv + (size_t)(3 * l) * map, *sk0 = srho + map;                                      \
                for (int p = 0; p < Pl; p++) {                                                                \
                    const T *restrict rh = srho + (size_t)p * m, *restrict kz = sk0 + (size_t)p * m;                            \
                    T *restrict G1 = g1 + (size_t)p * m, *restrict G0 = g0 + (size_t)p * m, *restrict GT = gt + (size_t)p * m;           \
                    T *restrict GV = gv + (size_t)p * m;                                                               \
                    const T na = rA[(size_t)p * A + a], ina = iA[(size_t)p * A + a];                          \
                    const T *restrict rBp = rB + (size_t)p * B + b0;                                                   \
                    T *restrict GN = wa + (size_t)p * m; /* dK/dn, kept for the columns' variance adjoint */  \
                    if (ntk) {                                                                                \
                        for (int k = 0; k < m; k++) {                                                         \
                            T n = na * rBp[k];                                                                \
                            T rho = rh[k], om = (1 - rho) * (1 + rho), so = SQRT(om);                         \
                            T keep = om > 100 * eps ? (T)1 : (T)0; /* the cusp: J0' dropped */ \
                            T d0 = keep * (T)INV_2PI / (so * n + (1 - keep));                                \
                            T gsv = G1[k] * kz[k] + G0[k] * d0 + GT[k];                                       \
                            T gn = G1[k] * so * (T)INV_2PI - G0[k] * rho * d0;                                \
                            GV[k] += gn * rBp[k] * ina;                                                       \
                            GN[k] = gn;                                                                       \
                            G1[k] = gsv; /* G1 now holds dK/dS of layer l */                                  \
                        }                                                                                     \
                    } else {                                                                                  \
                        for (int k = 0; k < m; k++) {                                                         \
                            T om = (1 - rh[k]) * (1 + rh[k]);                                                 \
                            T gn = G1[k] * SQRT(om) * (T)INV_2PI;                                             \
                            GV[k] += gn * rBp[k] * ina;                                                       \
                            GN[k] = gn;                                                                       \
                            G1[k] = G1[k] * kz[k];                                                            \
                        }                                                                                     \
                    }                                                                                         \
                    if (sym) {                                                                                \
                        T *restrict GW = gw + (size_t)p * m;                                                  \
                        const T *restrict iBp = iB + (size_t)p * B + b0;                                      \
                        for (int k = 0; k < m; k++) GW[k] += GN[k] * na * iBp[k];                             \
                    }                                                                                         \
                }                                                                                             \
                if (l == 0) break;                                                                            \
                int hp = (int)hs[l - 1], wp = (int)ws[l - 1];                                                 \
                T *pk0 = sv + (size_t)(3 * (l - 1) + 1) * map, *pth = pk0 + map;                              \
                box_##T(g1, (int)hs[l], (int)ws[l], cs, hp, wp, q, adj_off, m, scale);                        \
                memcpy(g1, cs, sizeof(T) * (size_t)hp * wp * m);                                              \
                if (ntk) {                                                                                    \
                    box_##T(gt, (int)hs[l], (int)ws[l], ct, hp, wp, q, adj_off, m, scale);                    \
                    for (size_t e = 0; e < (size_t)hp * wp * m; e++) { g0[e] = ct[e] * pth[e]; gt[e] = ct[e] * pk0[e]; } \
                }                                                                                             \
                box_##T(gv, (int)hs[l], (int)ws[l], cs, hp, wp, q, adj_off, m, scale / 2);                    \
                memcpy(gv, cs, sizeof(T) * (size_t)hp * wp * m);                                              \
                if (sym) {                                                                                    \
                    box_##T(gw, (int)hs[l], (int)ws[l], cs, hp, wp, q, adj_off, m, scale / 2);                \
                    memcpy(gw, cs, sizeof(T) * (size_t)hp * wp * m);                                          \
                }                                                                                             \
            }                                                                                                 \
            {                                                                                                 \
                const T inv = (T)(1.0 / in_dim);                                                              \
                for (int p = 0; p < P1; p++) {                                                                \
                    T *dc = gc + (size_t)p * n_pairs + k0p, *ds = gs + (size_t)p * n_pairs + k0p;             \
                    const T *G1 = g1 + (size_t)p * m, *GV = gv + (size_t)p * m;                               \
                    for (int k = 0; k < m; k++) { dc[k] = G1[k] * inv; ds[k] = GV[k] * inv; }                 \
                    if (sym) {                                                                                \
                        T *dw = gsb + (size_t)p * n_pairs + k0p;                                              \
                        const T *GW = gw + (size_t)p * m;                                                     \
                        for (int k = 0; k < m; k++) dw[k] = GW[k] * inv;                                      \
                    }                                                                                         \
                }                                                                                             \
            }                                                                                                 \
        }                                                                                                     \
        free(mem);                                                                                            \
    }                                                                                                         \
}

DEFINE_RECURSION(float, acos_f, sqrtf)
DEFINE_RECURSION(double, acos_d, sqrt)

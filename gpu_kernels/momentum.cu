/* momentum.cu: the notebook's kernel, p[i] = sqrt(px[i]^2 + py[i]^2 + pz[i]^2) (the magnitude of a
 * momentum), elementwise over three inputs, float32 and float64, with a grid-stride loop: any grid and
 * block cover all n elements exactly once.
 *
 * On the GPU, nvcc and NVRTC contract the sum into fused multiply-adds (FMA): results may differ from
 * numpy's (three roundings, then a correctly rounded sqrt) by up to 2 ulp. The CPU build (g++ with
 * -ffp-contract=off, pyguts.native's default) rounds as numpy does.
 *
 * Counts are unsigned long long, not size_t: NVRTC (CuPy RawModule) compiles without <stddef.h>.
 */
// pyguts: lengths px=n py=n pz=n p=n
#if !defined(__CUDACC__) && !defined(PYGUTS_CPU_SHIM_H)
#include "cpu_shim.h"
#endif

extern "C" __global__ void momentum_f32(const float *px, const float *py, const float *pz, float *p,
                                        unsigned long long n) {
    unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        p[i] = sqrtf(px[i] * px[i] + py[i] * py[i] + pz[i] * pz[i]);
}

extern "C" __global__ void momentum_f64(const double *px, const double *py, const double *pz, double *p,
                                        unsigned long long n) {
    unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        p[i] = sqrt(px[i] * px[i] + py[i] * py[i] + pz[i] * pz[i]);
}

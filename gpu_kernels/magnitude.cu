/* magnitude.cu: out[i] = sqrt(x[i]^2 + y[i]^2), elementwise, with a grid-stride loop.
 *
 * Any grid and block cover all n elements exactly once: thread t of the whole grid handles
 * t, t + gridDim.x * blockDim.x, ... (so a launch may be smaller than n).
 *
 * Counts are unsigned long long, not size_t: NVRTC (CuPy RawModule) compiles without <stddef.h>.
 */
// pyguts: lengths x=n y=n out=n
#if !defined(__CUDACC__) && !defined(PYGUTS_CPU_SHIM_H)
#include "cpu_shim.h"
#endif

extern "C" __global__ void magnitude_f32(const float *x, const float *y, float *out, unsigned long long n) {
    unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        out[i] = sqrtf(x[i] * x[i] + y[i] * y[i]);
}

extern "C" __global__ void magnitude_f64(const double *x, const double *y, double *out, unsigned long long n) {
    unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        out[i] = sqrt(x[i] * x[i] + y[i] * y[i]);
}

/* cpu_shim.h: lets a gpu_kernels/<name>.cu file compile with g++ as a CPU reference of itself.
 *
 * Each .cu includes this header only when nvcc is not compiling it (no __CUDACC__). A kernel
 * launch kernel<<<grid, block>>>(...) becomes pyguts_cpu_launch(grid, block, [&]{ kernel(...); }):
 * the blocks run one after another, and the threads of a block run as an OpenMP team (compile
 * with -fopenmp), so __syncthreads() is a real barrier and __shared__ memory (static here: one
 * copy, blocks do not overlap) is shared by the block's threads only. One dimension (x) only.
 * Not reentrant: the launch geometry lives in globals, as it does in the CUDA model.
 */
#ifndef PYGUTS_CPU_SHIM_H
#define PYGUTS_CPU_SHIM_H

#ifndef __cplusplus
#error "cpu_shim.h: compile the .cu file as C++ (g++ -x c++), as nvcc does"
#endif

#include <math.h>
#include <stddef.h>
#ifdef _OPENMP
#include <omp.h>
#endif

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
/* One copy per kernel function; blocks run one after another, so one copy is enough. */
#define __shared__ static

static dim3 gridDim, blockDim, blockIdx;
static thread_local dim3 threadIdx;

static inline void __syncthreads(void) {
#ifdef _OPENMP
#pragma omp barrier
#endif
}

template <typename T>
static inline T atomicAdd(T *addr, T value) {
    T old;
#pragma omp atomic capture
    { old = *addr; *addr += value; }
    return old;
}

/* Status codes of pyguts_cpu_launch. */
#define PYGUTS_CPU_OK 0
#define PYGUTS_CPU_SHORT_TEAM (-1)   /* OpenMP gave fewer threads than block (or no OpenMP) */
#define PYGUTS_CPU_EMPTY_LAUNCH (-2) /* grid or block is 0: CUDA refuses that launch too */

template <typename F>
static int pyguts_cpu_launch(unsigned grid, unsigned block, F body) {
    if (grid == 0 || block == 0)
        return PYGUTS_CPU_EMPTY_LAUNCH;
#ifndef _OPENMP
    if (block > 1)
        return PYGUTS_CPU_SHORT_TEAM;
#else
    omp_set_dynamic(0);
#endif
    gridDim = dim3(grid);
    blockDim = dim3(block);
    int short_team = 0;
    for (unsigned b = 0; b < grid && !short_team; b++) {
        blockIdx = dim3(b);
#pragma omp parallel num_threads(block)
        {
#ifdef _OPENMP
            /* Every thread sees the same team size, so all skip together: no barrier deadlock. */
            if ((unsigned)omp_get_num_threads() != block) {
                if (omp_get_thread_num() == 0)  /* not `omp master`: deprecated in OpenMP 5.1, an error under g++ 16 -Werror */
                    short_team = 1;
            } else {
                threadIdx = dim3((unsigned)omp_get_thread_num());
                body();
            }
#else
            threadIdx = dim3(0);
            body();
#endif
        }
    }
    return short_team ? PYGUTS_CPU_SHORT_TEAM : PYGUTS_CPU_OK;
}

#endif /* PYGUTS_CPU_SHIM_H */

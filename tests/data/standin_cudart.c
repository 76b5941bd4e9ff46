/* A stand-in for libcudart with the real CUDA runtime ABI (int error codes, out-pointers), for the
 * error paths of edgerun/backends/cudart.py on a machine without a GPU. It never pretends to own
 * device memory: cudaMalloc and every stream/event/copy call fail unless told otherwise, and
 * none of its "successes" is used as an inference result.
 *
 * STANDIN_CUDART_VERSION=12060   what cudaRuntimeGetVersion reports (default 12060 = 12.6)
 * STANDIN_CUDART_FAIL=cudaMalloc  that call returns STANDIN_CUDART_CODE (default 2, out of memory)
 * Built without -DSTANDIN_FULL, cudaEventElapsedTime is missing: "not a CUDA runtime".
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static int outcome(const char *call) {
    const char *fail = getenv("STANDIN_CUDART_FAIL");
    if (fail != NULL && strcmp(fail, call) == 0) {
        const char *code = getenv("STANDIN_CUDART_CODE");
        return code != NULL ? atoi(code) : 2;
    }
    return 0;
}

const char *cudaGetErrorName(int code) {
    switch (code) {
    case 0: return "cudaSuccess";
    case 2: return "cudaErrorMemoryAllocation";
    case 35: return "cudaErrorInsufficientDriver";
    case 100: return "cudaErrorNoDevice";
    default: return "cudaErrorUnknown";
    }
}

const char *cudaGetErrorString(int code) {
    switch (code) {
    case 0: return "no error";
    case 2: return "out of memory";
    case 35: return "CUDA driver version is insufficient for CUDA runtime version";
    case 100: return "no CUDA-capable device is detected";
    default: return "unknown error";
    }
}

int cudaRuntimeGetVersion(int *version) {
    const char *text = getenv("STANDIN_CUDART_VERSION");
    *version = text != NULL ? atoi(text) : 12060;
    return outcome("cudaRuntimeGetVersion");
}

int cudaDriverGetVersion(int *version) { *version = 0; return outcome("cudaDriverGetVersion"); }
int cudaGetDeviceCount(int *count) { *count = 1; return outcome("cudaGetDeviceCount"); }
int cudaSetDevice(int device) { (void)device; return outcome("cudaSetDevice"); }
int cudaDeviceGetAttribute(int *value, int attribute, int device) {
    (void)attribute; (void)device; *value = 0; return outcome("cudaDeviceGetAttribute");
}
int cudaGetDeviceProperties(char *properties, int device) {
    (void)device; strcpy(properties, "stand-in"); return outcome("cudaGetDeviceProperties");
}
/* Calls that would touch a GPU: they fail with cudaErrorNoDevice unless STANDIN_CUDART_FAIL
 * names another call, so nothing downstream can run on made-up device memory. */
static int no_device(const char *call) { int code = outcome(call); return code != 0 ? code : 100; }
int cudaMalloc(void **pointer, size_t size) { (void)size; *pointer = NULL; return no_device("cudaMalloc"); }
int cudaFree(void *pointer) { (void)pointer; return no_device("cudaFree"); }
int cudaMemcpyAsync(void *dst, const void *src, size_t n, int kind, void *stream) {
    (void)dst; (void)src; (void)n; (void)kind; (void)stream; return no_device("cudaMemcpyAsync");
}
int cudaStreamCreate(void **stream) { *stream = NULL; return no_device("cudaStreamCreate"); }
int cudaStreamSynchronize(void *stream) { (void)stream; return no_device("cudaStreamSynchronize"); }
int cudaStreamDestroy(void *stream) { (void)stream; return no_device("cudaStreamDestroy"); }
int cudaEventCreate(void **event) { *event = NULL; return no_device("cudaEventCreate"); }
int cudaEventRecord(void *event, void *stream) { (void)event; (void)stream; return no_device("cudaEventRecord"); }
int cudaEventSynchronize(void *event) { (void)event; return no_device("cudaEventSynchronize"); }
int cudaEventDestroy(void *event) { (void)event; return no_device("cudaEventDestroy"); }
#ifdef STANDIN_FULL
int cudaEventElapsedTime(float *ms, void *start, void *end) {
    (void)start; (void)end; *ms = 0.0f; return no_device("cudaEventElapsedTime");
}
#endif

/* A stand-in for a vendor TFLite external delegate (libedgetpu.so.1, libvx_delegate.so,
 * libarmnnDelegate.so) built at the real external-delegate ABI, so that tests drive LiteRT's
 * own load_delegate path on a machine without the hardware.
 *
 * STANDIN_DELEGATE_MODE=refuse  create() reports an error and returns NULL, as libedgetpu does
 *                               when it cannot open an Edge TPU.
 * STANDIN_DELEGATE_MODE=accept  create() returns a delegate that claims no nodes: the model
 *                               runs on the CPU kernels.
 * STANDIN_DELEGATE_LOG=path     each option received is appended to this file as key=value.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct StandinDelegate {       /* same layout as TfLiteDelegate */
    void *data_;
    int (*Prepare)(void *context, struct StandinDelegate *delegate);
    int (*CopyFromBufferHandle)(void *context, struct StandinDelegate *delegate, int handle, void *tensor);
    int (*CopyToBufferHandle)(void *context, struct StandinDelegate *delegate, int handle, void *tensor);
    void (*FreeBufferHandle)(void *context, struct StandinDelegate *delegate, int *handle);
    int64_t flags;
    void *opaque_delegate_builder;
} StandinDelegate;

static int prepare_nothing(void *context, StandinDelegate *delegate) {
    (void)context;
    (void)delegate;
    return 0; /* kTfLiteOk, no node replaced */
}

static void log_options(char **keys, char **values, size_t count) {
    const char *path = getenv("STANDIN_DELEGATE_LOG");
    if (path == NULL) return;
    FILE *out = fopen(path, "a");
    if (out == NULL) return;
    for (size_t i = 0; i < count; i++) fprintf(out, "%s=%s\n", keys[i], values[i]);
    fclose(out);
}

StandinDelegate *tflite_plugin_create_delegate(char **keys, char **values, size_t count,
                                               void (*report_error)(const char *)) {
    log_options(keys, values, count);
    const char *mode = getenv("STANDIN_DELEGATE_MODE");
    if (mode == NULL || strcmp(mode, "accept") != 0) {
        if (report_error != NULL) report_error("stand-in delegate: could not open the device");
        return NULL;
    }
    StandinDelegate *delegate = calloc(1, sizeof(StandinDelegate));
    if (delegate != NULL) delegate->Prepare = prepare_nothing;
    return delegate;
}

void tflite_plugin_destroy_delegate(StandinDelegate *delegate) { free(delegate); }

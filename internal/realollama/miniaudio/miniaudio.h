/*
 * A stand-in for miniaudio.h, which the Go module zip of Ollama lacks. llama.cpp's mtmd-helper.cpp includes it
 * only to decode audio input; DeeperSensor's tests send text, so every decoder call here fails, and audio input
 * is reported as unsupported. scripts/ollama-build.sh passes this folder's parent as CGO_CPPFLAGS=-I<dir>.
 */
#ifndef DEEPERSENSOR_MINIAUDIO_STUB_H
#define DEEPERSENSOR_MINIAUDIO_STUB_H

#include <stddef.h>
#include <stdint.h>

typedef int ma_result;
typedef uint32_t ma_uint32;
typedef uint64_t ma_uint64;

#define MA_SUCCESS 0
#define MA_NOT_IMPLEMENTED (-29)

typedef enum { ma_format_unknown = 0, ma_format_f32 = 5 } ma_format;

typedef struct {
    ma_format format;
    ma_uint32 channels;
    ma_uint32 sampleRate;
} ma_decoder_config;

typedef struct {
    int unused;
} ma_decoder;

static inline ma_decoder_config ma_decoder_config_init(ma_format format, ma_uint32 channels, ma_uint32 sample_rate) {
    ma_decoder_config config;
    config.format = format;
    config.channels = channels;
    config.sampleRate = sample_rate;
    return config;
}

static inline ma_result ma_decoder_init_memory(const void *data, size_t size, const ma_decoder_config *config,
                                               ma_decoder *decoder) {
    (void)data;
    (void)size;
    (void)config;
    (void)decoder;
    return MA_NOT_IMPLEMENTED;
}

static inline ma_result ma_decoder_get_length_in_pcm_frames(ma_decoder *decoder, ma_uint64 *length) {
    (void)decoder;
    *length = 0;
    return MA_NOT_IMPLEMENTED;
}

static inline ma_result ma_decoder_read_pcm_frames(ma_decoder *decoder, void *frames, ma_uint64 count,
                                                   ma_uint64 *read) {
    (void)decoder;
    (void)frames;
    (void)count;
    *read = 0;
    return MA_NOT_IMPLEMENTED;
}

static inline ma_result ma_decoder_uninit(ma_decoder *decoder) {
    (void)decoder;
    return MA_SUCCESS;
}

#endif

/*
 * stub_rkllmrt.c — a TEST DOUBLE of librkllmrt.so. Never a runtime: it generates no text of its own.
 *
 * It exports the RKLLM runtime's symbols with the struct layouts of runtime 1.2.1–1.2.3
 * (-DSTUB_ABI=12) or 1.3.0 (-DSTUB_ABI=13), written from the byte tables in
 * docs/board.md, "RKLLM struct layouts" (not from rkllm.h). It records everything the
 * binding passes and answers through the result callback, so tests can see every field arrive.
 *
 * The "model file" given to rkllm_init is a text file of key=value lines:
 *   embed_width=E        floats per vision token (the runtime knows it from the model)
 *   reply=echo|text|wait_abort|error|run_fail
 *                        echo: the text is a JSON record of what init and run received
 *                        text: the text= value; wait_abort: one chunk, then block until rkllm_abort
 *                        error: one chunk, then the ERROR state; run_fail: rkllm_run returns -1
 *   text=...             reply text for reply=text (UTF-8; "\n" is written as \n)
 *   chunk=N              bytes per NORMAL callback (cuts UTF-8 characters when N is small)
 *   waiting=1            a chunk that ends inside a UTF-8 character is preceded by a WAITING call
 *                        whose text is junk the binding must ignore
 *   delay_us=N           pause between chunks (checks for abort)
 *   hold_after=N         after N NORMAL chunks, stop streaming and block until rkllm_abort (a runtime
 *                        still going past a limit only the binding knows about)
 *   abort_error=1        a run stopped by rkllm_abort ends with an ERROR call
 *   abort_rc=N           a run stopped by rkllm_abort returns N from rkllm_run
 *   init_rc=N            rkllm_init returns N
 *   clear_rc=N           rkllm_clear_kv_cache returns N
 *   template_rc=N        rkllm_set_chat_template returns N
 *   prefill_ms=F, generate_ms=F   perf values reported at FINISH
 * A run takes multimodal input (type 3, with <image> placeholders) or text-only prompt input (type 0).
 * Contracts it enforces (docs/board.md): one rkllm_run per handle at a time (a second concurrent call
 * is counted in "overlapping_runs" and returns -1); on 1.3.0 the prompt holds exactly n_image "<image>"
 * tags (otherwise the ERROR state); a callback returning 1 pauses the run, and on 1.3.0 a 2 is counted as
 * a buffer release ("released_buffers").
 * rkllm_set_chat_template records its three strings; the echo reply shows them and the whole text the
 * template makes of the prompt ("templated").
 * Build: gcc -shared -fPIC -O0 -DSTUB_ABI=13 [-DSTUB_VERSION='"1.3.0"'] -o libstub.so stub_rkllmrt.c
 * Test-only exports: stub_state() (JSON of counters and the last records), stub_reset().
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef STUB_ABI
#error "define STUB_ABI=12 or STUB_ABI=13"
#endif

#ifdef STUB_VERSION
/* The real runtime prints "rkllm-runtime version: %s" with its version from a string constant. */
__attribute__((used)) static const char stub_runtime_version[] = STUB_VERSION;
#endif

typedef void *LLMHandle;
enum { RUN_NORMAL = 0, RUN_WAITING = 1, RUN_FINISH = 2, RUN_ERROR = 3 };

typedef struct {
    int32_t base_domain_id;
    int8_t embed_flash;
    int8_t enabled_cpus_num;
    uint32_t enabled_cpus_mask;
    uint8_t n_batch;
    int8_t use_cross_attn;
    uint8_t reserved[104];
} ExtendParam;

typedef struct {
    const char *model_path;
    int32_t max_context_len;
    int32_t max_new_tokens;
    int32_t top_k;
    int32_t n_keep;
    float top_p;
    float temperature;
    float repeat_penalty;
    float frequency_penalty;
    float presence_penalty;
    int32_t mirostat;
    float mirostat_tau;
    float mirostat_eta;
    bool skip_special_token;
#if STUB_ABI == 12
    bool is_async;
    const char *img_start;
    const char *img_end;
    const char *img_content;
#else
    bool ignore_eos_token;
    bool is_async;
#endif
    ExtendParam extend_param;
} Param;

typedef struct { float *embed; size_t n_tokens; } EmbedInput;
typedef struct { int32_t *input_ids; size_t n_tokens; } TokenInput;

#if STUB_ABI == 12
typedef struct {
    char *prompt;
    float *image_embed;
    size_t n_image_tokens;
    size_t n_image;
    size_t image_width;
    size_t image_height;
} MultiModal;
#else
typedef struct {
    char *prompt;
    struct {
        float *image_embed;
        size_t n_image_tokens;
        size_t n_image;
        const char *image_start;
        const char *image_end;
        const char *image_content;
        size_t image_width;
        size_t image_height;
    } image;
    struct {
        float *video_embed;
        size_t n_frame_tokens;
        size_t n_frame_per_video;
        size_t n_video;
        const char *video_start;
        const char *video_end;
        const char *video_content;
        size_t frame_width;
        size_t frame_height;
    } video;
} MultiModal;
#endif

typedef struct {
    const char *role;
    bool enable_thinking;
    int input_type;
    union {
        const char *prompt_input;
        EmbedInput embed_input;
        TokenInput token_input;
        MultiModal multimodal_input;
    };
} Input;

typedef struct { const char *lora_adapter_name; } LoraParam;
typedef struct { int save_prompt_cache; const char *prompt_cache_path; } PromptCacheParam;

#if STUB_ABI == 13
typedef struct {
    int32_t top_k;
    float top_p;
    float temperature;
    float repeat_penalty;
    float frequency_penalty;
    float presence_penalty;
    int32_t mirostat;
    float mirostat_tau;
    float mirostat_eta;
} SamplingParam;
#endif

typedef struct {
    int mode;
    LoraParam *lora_params;
    PromptCacheParam *prompt_cache_params;
#if STUB_ABI == 13
    SamplingParam *sampling_params;
    int keep_history;
    int32_t max_new_tokens;
#else
    int keep_history;
#endif
} InferParam;

typedef struct { const float *hidden_states; int embd_size; int num_tokens; } LastHidden;
typedef struct { const float *logits; int vocab_size; int num_tokens; } Logits;
typedef struct {
    float prefill_time_ms;
    int prefill_tokens;
    float generate_time_ms;
    int generate_tokens;
    float memory_usage_mb;
} PerfStat;
typedef struct {
    const char *text;
    int32_t token_id;
    LastHidden last_hidden_layer;
    Logits logits;
    PerfStat perf;
} Result;

typedef int (*ResultCallback)(Result *result, void *userdata, int state);
#if STUB_ABI == 13
typedef struct {
    ResultCallback result_callback;
    void *result_userdata;
    void *tokenizer_callback;
    void *tokenizer_userdata;
    void *embed_callback;
    void *embed_userdata;
} Callbacks;
#endif

/* ---------------------------------------------------------------------------------------- */
/* State */

#define BIG 262144
static char init_json[BIG];
static char run_json[BIG];
static char template_json[BIG];
static char template_parts[3][4096];
static int template_set;
static char reply_buf[BIG];
static char text_buf[BIG];
static char state_buf[3 * BIG + 4096];

static struct {
    int n_init, n_run, n_abort, n_destroy, n_clear, n_template, n_other;
    volatile int active_runs;
    int overlapping_runs;
    int released_buffers;
    int clear_keep, clear_start_null, clear_end_null;
    int running;
    volatile int abort_flag;
    int callback_returns[16];     /* histogram of return values 0..15 */
    int callback_bad_returns;     /* values outside 0..15 */
    int normal_calls, waiting_calls, finish_calls, error_calls;
    int handle_ok;
} st;

static struct {
    int embed_width;
    char reply[32];
    int chunk;
    int waiting;
    int delay_us;
    int hold_after;
    int abort_error;
    int abort_rc;
    int init_rc;
    int clear_rc;
    int template_rc;
    float prefill_ms, generate_ms;
} model;

static ResultCallback callback;
static void *callback_userdata;
static Param init_param;
static int handle_token;

void stub_reset(void) {
    memset(&st, 0, sizeof st);
    init_json[0] = run_json[0] = template_json[0] = 0;
}

/* ---------------------------------------------------------------------------------------- */
/* JSON helpers */

static size_t json_str(char *out, size_t cap, const char *s) {
    size_t n = 0;
    if (!s) return (size_t)snprintf(out, cap, "null");
    if (n < cap) out[n] = '"';
    n++;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        const char *piece = esc;
        if (*p == '"') piece = "\\\"";
        else if (*p == '\\') piece = "\\\\";
        else if (*p == '\n') piece = "\\n";
        else if (*p < 0x20) snprintf(esc, sizeof esc, "\\u%04x", *p);
        else { esc[0] = (char)*p; esc[1] = 0; }
        for (const char *q = piece; *q; q++) {
            if (n < cap) out[n] = *q;
            n++;
        }
    }
    if (n < cap) out[n] = '"';
    n++;
    if (n < cap) out[n] = 0; else if (cap) out[cap - 1] = 0;
    return n;
}

typedef struct { char *buf; size_t cap; size_t len; } Out;

static void put(Out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(Out *o, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->buf + o->len, o->len < o->cap ? o->cap - o->len : 0, fmt, ap);
    va_end(ap);
    if (n > 0) o->len += (size_t)n;
    if (o->len >= o->cap) o->len = o->cap - 1;
}

static void put_str(Out *o, const char *key, const char *value) {
    put(o, "\"%s\":", key);
    size_t n = json_str(o->buf + o->len, o->cap - o->len, value);
    o->len += n;
    if (o->len >= o->cap) o->len = o->cap - 1;
    put(o, ",");
}

/* ---------------------------------------------------------------------------------------- */
/* The model file */

static void unescape(char *s) {
    char *w = s;
    for (char *r = s; *r; r++) {
        if (r[0] == '\\' && r[1] == 'n') { *w++ = '\n'; r++; }
        else *w++ = *r;
    }
    *w = 0;
}

static int read_model(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    memset(&model, 0, sizeof model);
    strcpy(model.reply, "echo");
    model.chunk = 5;
    model.prefill_ms = 125.5f;
    model.generate_ms = 250.25f;
    text_buf[0] = 0;
    static char line[BIG];
    while (fgets(line, sizeof line, f)) {
        size_t n = strlen(line);
        if (n && line[n - 1] == '\n') line[--n] = 0;
        char *eq = strchr(line, '=');
        if (!eq) continue;
        *eq = 0;
        const char *key = line, *val = eq + 1;
        if (!strcmp(key, "embed_width")) model.embed_width = atoi(val);
        else if (!strcmp(key, "reply")) snprintf(model.reply, sizeof model.reply, "%s", val);
        else if (!strcmp(key, "text")) { snprintf(text_buf, sizeof text_buf, "%s", val); unescape(text_buf); }
        else if (!strcmp(key, "chunk")) model.chunk = atoi(val);
        else if (!strcmp(key, "waiting")) model.waiting = atoi(val);
        else if (!strcmp(key, "delay_us")) model.delay_us = atoi(val);
        else if (!strcmp(key, "hold_after")) model.hold_after = atoi(val);
        else if (!strcmp(key, "abort_error")) model.abort_error = atoi(val);
        else if (!strcmp(key, "abort_rc")) model.abort_rc = atoi(val);
        else if (!strcmp(key, "init_rc")) model.init_rc = atoi(val);
        else if (!strcmp(key, "clear_rc")) model.clear_rc = atoi(val);
        else if (!strcmp(key, "template_rc")) model.template_rc = atoi(val);
        else if (!strcmp(key, "prefill_ms")) model.prefill_ms = (float)atof(val);
        else if (!strcmp(key, "generate_ms")) model.generate_ms = (float)atof(val);
    }
    fclose(f);
    if (model.chunk < 1) model.chunk = 1;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Exported API */

Param rkllm_createDefaultParam(void) {
    Param p;
    memset(&p, 0, sizeof p);
    p.max_context_len = 512;
    p.max_new_tokens = -1;
    p.top_k = 40;
    p.n_keep = -1;
    p.top_p = 0.9f;
    p.temperature = 0.8f;
    p.repeat_penalty = 1.1f;
    p.mirostat_tau = 5.0f;
    p.mirostat_eta = 0.1f;
    p.extend_param.enabled_cpus_num = 4;
    p.extend_param.enabled_cpus_mask = 0xF0;
    p.extend_param.n_batch = 1;
    return p;
}

static void record_init(const Param *p) {
    Out o = {init_json, BIG, 0};
    put(&o, "{");
    put_str(&o, "model_path", p->model_path);
    put(&o, "\"max_context_len\":%d,\"max_new_tokens\":%d,\"top_k\":%d,\"n_keep\":%d,", p->max_context_len,
        p->max_new_tokens, p->top_k, p->n_keep);
    put(&o, "\"top_p\":%.6g,\"temperature\":%.6g,\"repeat_penalty\":%.6g,\"frequency_penalty\":%.6g,", p->top_p,
        p->temperature, p->repeat_penalty, p->frequency_penalty);
    put(&o, "\"presence_penalty\":%.6g,\"mirostat\":%d,\"mirostat_tau\":%.6g,\"mirostat_eta\":%.6g,",
        p->presence_penalty, p->mirostat, p->mirostat_tau, p->mirostat_eta);
    put(&o, "\"skip_special_token\":%d,\"is_async\":%d,", p->skip_special_token, p->is_async);
#if STUB_ABI == 12
    put_str(&o, "img_start", p->img_start);
    put_str(&o, "img_end", p->img_end);
    put_str(&o, "img_content", p->img_content);
#else
    put(&o, "\"ignore_eos_token\":%d,", p->ignore_eos_token);
#endif
    const ExtendParam *e = &p->extend_param;
    int reserved_zero = 1;
    for (int i = 0; i < 104; i++) if (e->reserved[i]) reserved_zero = 0;
    put(&o, "\"base_domain_id\":%d,\"embed_flash\":%d,\"enabled_cpus_num\":%d,\"enabled_cpus_mask\":%u,",
        e->base_domain_id, e->embed_flash, e->enabled_cpus_num, e->enabled_cpus_mask);
    put(&o, "\"n_batch\":%d,\"use_cross_attn\":%d,\"reserved_zero\":%d,", e->n_batch, e->use_cross_attn,
        reserved_zero);
    put(&o, "\"sizeof_param\":%zu,\"sizeof_input\":%zu,\"sizeof_infer\":%zu,\"sizeof_result\":%zu,"
        "\"sizeof_multimodal\":%zu,\"abi\":%d}", sizeof(Param), sizeof(Input), sizeof(InferParam),
        sizeof(Result), sizeof(MultiModal), STUB_ABI);
}

#if STUB_ABI == 12
int rkllm_init(LLMHandle *handle, Param *param, ResultCallback cb) {
    callback = cb;
    callback_userdata = NULL;
#else
int rkllm_init(LLMHandle *handle, Param *param, Callbacks *cbs) {
    callback = cbs ? cbs->result_callback : NULL;
    callback_userdata = cbs ? cbs->result_userdata : NULL;
    if (cbs && (cbs->tokenizer_callback || cbs->embed_callback)) st.n_other++;
#endif
    st.n_init++;
#ifdef STUB_VERSION
    fprintf(stderr, "I rkllm: rkllm-runtime version: %s, rknpu driver version: stub, platform: stub\n",
            stub_runtime_version);
#endif
    if (!handle || !param || !param->model_path || !callback) return -1;
    if (read_model(param->model_path) != 0) {
        fprintf(stderr, "E rkllm: stub: cannot open model %s\n", param->model_path);
        return -1;
    }
    record_init(param);
    template_set = 0;
    template_json[0] = 0;
    if (model.init_rc != 0) return model.init_rc;
    init_param = *param;
    *handle = &handle_token;
    st.handle_ok = 1;
    return 0;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

enum { INPUT_PROMPT = 0, INPUT_MULTIMODAL = 3 };

/* The text of a run: prompt_input for a text-only run, the multimodal prompt otherwise. */
static const char *input_prompt(const Input *in) {
    return in->input_type == INPUT_PROMPT ? in->prompt_input : in->multimodal_input.prompt;
}

static int count_placeholders(const char *s) {
    int n = 0;
    for (const char *p = s; p && (p = strstr(p, "<image>")); p += 7) n++;
    return n;
}

static void record_run(LLMHandle h, const Input *in, const InferParam *ip, void *userdata) {
    Out o = {run_json, BIG, 0};
    put(&o, "{\"handle_ok\":%d,", h == &handle_token);
    put_str(&o, "role", in->role);
    put(&o, "\"enable_thinking\":%d,\"input_type\":%d,", in->enable_thinking, in->input_type);
    const MultiModal *mm = &in->multimodal_input;
    const char *prompt = input_prompt(in);
    put_str(&o, "prompt", prompt);
    put(&o, "\"placeholders\":%d,", count_placeholders(prompt));
    if (template_set) {
        static char templated[3 * 4096 + BIG / 4];
        snprintf(templated, sizeof templated, "%s%s%s%s", template_parts[0], template_parts[1],
                 prompt ? prompt : "", template_parts[2]);
        put_str(&o, "templated", templated);
    } else {
        put(&o, "\"templated\":null,");
    }
    if (in->input_type == INPUT_PROMPT) {
        /* Text only: the union holds just the prompt pointer; there is no image to read. */
        put(&o, "\"n_image_tokens\":0,\"n_image\":0,\"embed_count\":0,");
    } else {
#if STUB_ABI == 12
        const float *embed = mm->image_embed;
        size_t tokens = mm->n_image_tokens, n_image = mm->n_image;
        put(&o, "\"n_image_tokens\":%zu,\"n_image\":%zu,\"image_width\":%zu,\"image_height\":%zu,", tokens, n_image,
            mm->image_width, mm->image_height);
#else
        const float *embed = mm->image.image_embed;
        size_t tokens = mm->image.n_image_tokens, n_image = mm->image.n_image;
        put(&o, "\"n_image_tokens\":%zu,\"n_image\":%zu,\"image_width\":%zu,\"image_height\":%zu,", tokens, n_image,
            mm->image.image_width, mm->image.image_height);
        put_str(&o, "image_start", mm->image.image_start);
        put_str(&o, "image_end", mm->image.image_end);
        put_str(&o, "image_content", mm->image.image_content);
        int video_zero = !mm->video.video_embed && !mm->video.n_frame_tokens && !mm->video.n_frame_per_video &&
                         !mm->video.n_video && !mm->video.video_start && !mm->video.video_end &&
                         !mm->video.video_content && !mm->video.frame_width && !mm->video.frame_height;
        put(&o, "\"video_zero\":%d,", video_zero);
#endif
        size_t count = n_image * tokens * (size_t)model.embed_width;
        double sum = 0, weighted = 0;
        if (embed && count) {
            for (size_t i = 0; i < count; i++) {
                sum += embed[i];
                weighted += (double)(i % 9973) * embed[i];
            }
            put(&o, "\"embed_first\":%.9g,\"embed_last\":%.9g,", embed[0], embed[count - 1]);
        } else {
            put(&o, "\"embed_first\":null,\"embed_last\":null,");
        }
        put(&o, "\"embed_count\":%zu,\"embed_sum\":%.17g,\"embed_weighted\":%.17g,", count, sum, weighted);
    }
    put(&o, "\"mode\":%d,\"lora_null\":%d,\"prompt_cache_null\":%d,\"keep_history\":%d,", ip->mode,
        ip->lora_params == NULL, ip->prompt_cache_params == NULL, ip->keep_history);
#if STUB_ABI == 13
    put(&o, "\"max_new_tokens\":%d,", ip->max_new_tokens);
    if (ip->sampling_params) {
        const SamplingParam *s = ip->sampling_params;
        put(&o, "\"sampling\":{\"top_k\":%d,\"top_p\":%.6g,\"temperature\":%.6g,\"repeat_penalty\":%.6g,"
            "\"frequency_penalty\":%.6g,\"presence_penalty\":%.6g,\"mirostat\":%d,\"mirostat_tau\":%.6g,"
            "\"mirostat_eta\":%.6g},", s->top_k, s->top_p, s->temperature, s->repeat_penalty,
            s->frequency_penalty, s->presence_penalty, s->mirostat, s->mirostat_tau, s->mirostat_eta);
    } else {
        put(&o, "\"sampling\":null,");
    }
#endif
    put(&o, "\"userdata_null\":%d,\"clear_before_run\":%d}", userdata == NULL, st.n_clear);
}

static int call(Result *r, int state) {
    if (state == RUN_NORMAL) st.normal_calls++;
    else if (state == RUN_WAITING) st.waiting_calls++;
    else if (state == RUN_FINISH) st.finish_calls++;
    else if (state == RUN_ERROR) st.error_calls++;
    int ret = callback(r, callback_userdata, state);
    if (ret >= 0 && ret < 16) st.callback_returns[ret]++;
    else st.callback_bad_returns++;
#if STUB_ABI == 13
    if (ret == 2) st.released_buffers++;
#endif
    return ret;
}

static int utf8_incomplete(const unsigned char *s, size_t n) {
    /* 1 if the bytes end inside a multi-byte character */
    size_t i = n;
    int back = 0;
    while (i > 0 && back < 4) {
        unsigned char c = s[i - 1];
        if ((c & 0xC0) != 0x80) {
            int need = (c >= 0xF0) ? 4 : (c >= 0xE0) ? 3 : (c >= 0xC0) ? 2 : 1;
            return back + 1 < need;
        }
        i--;
        back++;
    }
    return 0;
}

static void wait_for_abort(void) {
    double deadline = now_ms() + 20000;
    while (!st.abort_flag && now_ms() < deadline) usleep(1000);
}

static int stream(const char *text, size_t limit, int *generated) {
    /* NORMAL chunks of model.chunk bytes; returns 1 if stopped by abort or a callback's 1. */
    size_t len = strlen(text);
    char piece[4096];
    for (size_t at = 0; at < len; at += (size_t)model.chunk) {
        if (st.abort_flag) return 1;
        if ((size_t)*generated >= limit) return 0;
        size_t n = len - at < (size_t)model.chunk ? len - at : (size_t)model.chunk;
        if (n >= sizeof piece) n = sizeof piece - 1;
        memcpy(piece, text + at, n);
        piece[n] = 0;
        Result r;
        memset(&r, 0, sizeof r);
        if (model.waiting && utf8_incomplete((const unsigned char *)piece, n)) {
            r.text = "\xff junk the binding must ignore";
            call(&r, RUN_WAITING);
        }
        r.text = piece;
        r.token_id = *generated;
        (*generated)++;
        if (call(&r, RUN_NORMAL) == 1) return 1;
        if (model.hold_after && *generated == model.hold_after) {
            wait_for_abort();
            return 1;
        }
        if (model.delay_us) usleep((useconds_t)model.delay_us);
    }
    return 0;
}

static size_t image_tokens(const Input *in) {
    if (in->input_type == INPUT_PROMPT) return 0;
#if STUB_ABI == 12
    return in->multimodal_input.n_image * in->multimodal_input.n_image_tokens;
#else
    return in->multimodal_input.image.n_image * in->multimodal_input.image.n_image_tokens;
#endif
}

static int run_once(LLMHandle h, Input *in, InferParam *ip, void *userdata);

int rkllm_run(LLMHandle h, Input *in, InferParam *ip, void *userdata) {
    if (__sync_fetch_and_add(&st.active_runs, 1) > 0) {
        /* One inference per handle at a time (rknn-llm #382): a second caller is a binding bug. */
        __sync_fetch_and_add(&st.overlapping_runs, 1);
        __sync_fetch_and_sub(&st.active_runs, 1);
        return -1;
    }
    int rc = run_once(h, in, ip, userdata);
    __sync_fetch_and_sub(&st.active_runs, 1);
    return rc;
}

static int n_image_of(const Input *in) {
#if STUB_ABI == 12
    return (int)in->multimodal_input.n_image;
#else
    return (int)in->multimodal_input.image.n_image;
#endif
}

static int run_once(LLMHandle h, Input *in, InferParam *ip, void *userdata) {
    st.n_run++;
    st.abort_flag = 0;
    if (h != &handle_token || !in || !ip) return -1;
    record_run(h, in, ip, userdata);
    if (!strcmp(model.reply, "run_fail")) return -1;
    st.running = 1;
    const char *prompt = input_prompt(in);
    size_t limit = init_param.max_new_tokens > 0 ? (size_t)init_param.max_new_tokens : (size_t)-1;
#if STUB_ABI == 13
    if (ip->max_new_tokens > 0) limit = (size_t)ip->max_new_tokens;
#endif
    int generated = 0, stopped = 0;
    Result r;
    memset(&r, 0, sizeof r);
    /* 1.3.0: n_image equals the number of <image> tags in the prompt (SDK 1.3.0, table 3-17). */
    int tags_wrong = STUB_ABI == 13 && in->input_type == INPUT_MULTIMODAL && count_placeholders(prompt) != n_image_of(in);
    int multimodal_ok = in->input_type == INPUT_MULTIMODAL && count_placeholders(prompt) > 0 && !tags_wrong;
    int text_ok = in->input_type == INPUT_PROMPT && prompt != NULL;
    if (!(multimodal_ok || text_ok) || !strcmp(model.reply, "error")) {
        if (!strcmp(model.reply, "error")) stopped = stream("partial ", 1, &generated);
        call(&r, RUN_ERROR);
        st.running = 0;
        return 0;
    }
    if (!strcmp(model.reply, "echo")) {
        Out o = {reply_buf, BIG, 0};
        put(&o, "{\"init\":%s,\"run\":%s,\"template\":%s}", init_json, run_json,
            template_json[0] ? template_json : "null");
        stopped = stream(reply_buf, limit, &generated);
    } else if (!strcmp(model.reply, "wait_abort")) {
        Result w;
        memset(&w, 0, sizeof w);
        w.text = "waiting for abort";
        generated++;
        call(&w, RUN_NORMAL);
        wait_for_abort();
        stopped = 1;
    } else {
        stopped = stream(text_buf, limit, &generated);
    }
    if (!stopped) {
        memset(&r, 0, sizeof r);
        r.perf.prefill_time_ms = model.prefill_ms;
        r.perf.prefill_tokens = (int)(strlen(prompt) + image_tokens(in));
        r.perf.generate_time_ms = model.generate_ms;
        r.perf.generate_tokens = generated;
        r.perf.memory_usage_mb = 42.0f;
        call(&r, RUN_FINISH);
    } else if (st.abort_flag) {
        if (model.abort_error) {
            memset(&r, 0, sizeof r);
            call(&r, RUN_ERROR);
        }
        st.running = 0;
        return model.abort_rc;
    }
    st.running = 0;
    return 0;
}

int rkllm_run_async(LLMHandle h, Input *in, InferParam *ip, void *userdata) {
    (void)h; (void)in; (void)ip; (void)userdata;
    st.n_other++;
    return -1;
}

int rkllm_abort(LLMHandle h) {
    st.n_abort++;
    if (h != &handle_token) return -1;
    st.abort_flag = 1;
    return 0;
}

int rkllm_is_running(LLMHandle h) { (void)h; return st.running; }

int rkllm_destroy(LLMHandle h) {
    st.n_destroy++;
    if (h != &handle_token) return -1;
    st.handle_ok = 0;
    return 0;
}

int rkllm_clear_kv_cache(LLMHandle h, int keep_system_prompt, int *start_pos, int *end_pos) {
    st.n_clear++;
    st.clear_keep = keep_system_prompt;
    st.clear_start_null = start_pos == NULL;
    st.clear_end_null = end_pos == NULL;
    if (h != &handle_token) return -1;
    return model.clear_rc;
}

int rkllm_load_lora(LLMHandle h, void *a) { (void)h; (void)a; st.n_other++; return -1; }
int rkllm_load_prompt_cache(LLMHandle h, const char *p) { (void)h; (void)p; st.n_other++; return -1; }
int rkllm_release_prompt_cache(LLMHandle h) { (void)h; st.n_other++; return -1; }
int rkllm_set_chat_template(LLMHandle h, const char *system, const char *prefix, const char *postfix) {
    st.n_template++;
    if (h != &handle_token || !system || !prefix || !postfix) return -1;
    Out o = {template_json, BIG, 0};
    put(&o, "{");
    put_str(&o, "system", system);
    put_str(&o, "prefix", prefix);
    put_str(&o, "postfix", postfix);
    put(&o, "\"calls\":%d}", st.n_template);
    snprintf(template_parts[0], sizeof template_parts[0], "%s", system);
    snprintf(template_parts[1], sizeof template_parts[1], "%s", prefix);
    snprintf(template_parts[2], sizeof template_parts[2], "%s", postfix);
    template_set = model.template_rc == 0;
    return model.template_rc;
}
int rkllm_get_kv_cache_size(LLMHandle h, int *sizes) { (void)h; (void)sizes; st.n_other++; return -1; }
int rkllm_set_function_tools(LLMHandle h, const char *a, const char *b, const char *c) {
    (void)h; (void)a; (void)b; (void)c; st.n_other++; return -1;
}
int rkllm_set_cross_attn_params(LLMHandle h, void *p) { (void)h; (void)p; st.n_other++; return -1; }

const char *stub_state(void) {
    Out o = {state_buf, sizeof state_buf, 0};
    put(&o, "{\"n_init\":%d,\"n_run\":%d,\"n_abort\":%d,\"n_destroy\":%d,\"n_clear\":%d,\"n_template\":%d,"
        "\"n_other\":%d,", st.n_init, st.n_run, st.n_abort, st.n_destroy, st.n_clear, st.n_template, st.n_other);
    put(&o, "\"overlapping_runs\":%d,\"released_buffers\":%d,", st.overlapping_runs, st.released_buffers);
    put(&o, "\"clear_keep\":%d,\"clear_start_null\":%d,\"clear_end_null\":%d,\"running\":%d,\"handle_ok\":%d,",
        st.clear_keep, st.clear_start_null, st.clear_end_null, st.running, st.handle_ok);
    put(&o, "\"normal_calls\":%d,\"waiting_calls\":%d,\"finish_calls\":%d,\"error_calls\":%d,", st.normal_calls,
        st.waiting_calls, st.finish_calls, st.error_calls);
    put(&o, "\"callback_returns\":[");
    for (int i = 0; i < 16; i++) put(&o, "%s%d", i ? "," : "", st.callback_returns[i]);
    put(&o, "],\"callback_bad_returns\":%d,", st.callback_bad_returns);
    put(&o, "\"init\":%s,\"run\":%s,\"template\":%s}", init_json[0] ? init_json : "null",
        run_json[0] ? run_json : "null", template_json[0] ? template_json : "null");
    return state_buf;
}

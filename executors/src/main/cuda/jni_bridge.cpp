// JNI bridge for org.sparkmoe.cuda.CudaNative: device pointers travel as jlong, host data as direct
// ByteBuffers; a failing call throws org.sparkmoe.cuda.CudaException naming the call and the CUDA error.
#include <jni.h>
#include <cstdio>
#include "sparkmoe_cuda.h"

namespace {

bool check(JNIEnv* env, int err, const char* what) {
    if (err == 0) return true;
    char msg[256];
    snprintf(msg, sizeof msg, "CUDA error %d (%s) in %s", err, smk_error_string(err), what);
    jclass cls = env->FindClass("org/sparkmoe/cuda/CudaException");
    if (cls != nullptr) env->ThrowNew(cls, msg);
    return false;
}

template <typename T> T* ptr(jlong p) { return reinterpret_cast<T*>(static_cast<intptr_t>(p)); }

void* buffer(JNIEnv* env, jobject buf, jlong bytes, const char* what) {
    void* p = env->GetDirectBufferAddress(buf);
    if (p == nullptr || env->GetDirectBufferCapacity(buf) < bytes) {
        jclass cls = env->FindClass("java/lang/IllegalArgumentException");
        char msg[200];
        snprintf(msg, sizeof msg, "%s needs a direct buffer of at least %lld bytes", what, (long long)bytes);
        if (cls != nullptr) env->ThrowNew(cls, msg);
        return nullptr;
    }
    return p;
}

}  // namespace

#define FN(name) JNICALL Java_org_sparkmoe_cuda_CudaNative_##name

extern "C" {

JNIEXPORT jint FN(deviceCount)(JNIEnv*, jclass) {
    int n = 0;
    int err = smk_device_count(&n);
    return err == 0 ? n : -err;
}

JNIEXPORT jstring FN(errorString)(JNIEnv* env, jclass, jint err) { return env->NewStringUTF(smk_error_string(err)); }

JNIEXPORT jstring FN(deviceName)(JNIEnv* env, jclass, jint ordinal) {
    char name[256];
    if (!check(env, smk_device_name(ordinal, name, sizeof name), "deviceName")) return nullptr;
    return env->NewStringUTF(name);
}

JNIEXPORT void FN(setDevice)(JNIEnv* env, jclass, jint ordinal) { check(env, smk_set_device(ordinal), "setDevice"); }

JNIEXPORT jint FN(currentDevice)(JNIEnv* env, jclass) {
    int ordinal = 0;
    check(env, smk_get_device(&ordinal), "currentDevice");
    return ordinal;
}

JNIEXPORT jlong FN(malloc)(JNIEnv* env, jclass, jlong bytes) {
    void* p = nullptr;
    check(env, smk_malloc(&p, (size_t)bytes), "malloc");
    return reinterpret_cast<intptr_t>(p);
}

JNIEXPORT void FN(free)(JNIEnv* env, jclass, jlong p) { check(env, smk_free(ptr<void>(p)), "free"); }

JNIEXPORT void FN(copyToDevice)(JNIEnv* env, jclass, jlong dst, jobject src, jlong bytes) {
    void* h = buffer(env, src, bytes, "copyToDevice");
    if (h != nullptr) check(env, smk_copy_to_device(ptr<void>(dst), h, (size_t)bytes), "copyToDevice");
}

JNIEXPORT void FN(copyToHost)(JNIEnv* env, jclass, jobject dst, jlong src, jlong bytes) {
    void* h = buffer(env, dst, bytes, "copyToHost");
    if (h != nullptr) check(env, smk_copy_to_host(h, ptr<void>(src), (size_t)bytes), "copyToHost");
}

JNIEXPORT void FN(synchronize)(JNIEnv* env, jclass) { check(env, smk_synchronize(), "synchronize"); }

JNIEXPORT void FN(fillUniform)(JNIEnv* env, jclass, jlong p, jlong n, jint dtype, jlong seed, jfloat lo, jfloat hi) {
    check(env, smk_fill_uniform(ptr<void>(p), (size_t)n, dtype, (uint64_t)seed, lo, hi), "fillUniform");
}

JNIEXPORT void FN(gemmForwardF32)(JNIEnv* env, jclass, jlong x, jlong w, jlong y, jlong offsets, jint groups,
                                  jint rows, jint out, jint in, jboolean accumulate) {
    check(env, smk_gemm_forward_f32(ptr<float>(x), ptr<float>(w), ptr<float>(y), ptr<int>(offsets), groups, rows, out,
                                    in, accumulate), "gemmForwardF32");
}

JNIEXPORT void FN(gemmBackwardInputF32)(JNIEnv* env, jclass, jlong dy, jlong w, jlong dx, jlong offsets, jint groups,
                                        jint rows, jint out, jint in, jboolean accumulate) {
    check(env, smk_gemm_backward_input_f32(ptr<float>(dy), ptr<float>(w), ptr<float>(dx), ptr<int>(offsets), groups,
                                           rows, out, in, accumulate), "gemmBackwardInputF32");
}

JNIEXPORT void FN(gemmBackwardWeightF32)(JNIEnv* env, jclass, jlong dy, jlong x, jlong dw, jlong offsets,
                                         jint groups, jint rows, jint out, jint in, jboolean accumulate) {
    check(env, smk_gemm_backward_weight_f32(ptr<float>(dy), ptr<float>(x), ptr<float>(dw), ptr<int>(offsets), groups,
                                            rows, out, in, accumulate), "gemmBackwardWeightF32");
}

JNIEXPORT jlong FN(layerCreate)(JNIEnv* env, jclass, jint dtype, jint e, jint d, jint i, jint r, jfloat scale) {
    SmkLayer* layer = nullptr;
    check(env, smk_layer_create(&layer, dtype, e, d, i, r, scale), "layerCreate");
    return reinterpret_cast<intptr_t>(layer);
}

JNIEXPORT void FN(layerDestroy)(JNIEnv* env, jclass, jlong h) {
    check(env, smk_layer_destroy(ptr<SmkLayer>(h)), "layerDestroy");
}

JNIEXPORT void FN(layerSetBase)(JNIEnv* env, jclass, jlong h, jlong w1, jlong w3, jlong w2) {
    check(env, smk_layer_set_base(ptr<SmkLayer>(h), ptr<void>(w1), ptr<void>(w3), ptr<void>(w2)), "layerSetBase");
}

JNIEXPORT void FN(layerSetLora)(JNIEnv* env, jclass, jlong h, jlong a1, jlong b1, jlong a3, jlong b3, jlong a2,
                                jlong b2) {
    check(env, smk_layer_set_lora(ptr<SmkLayer>(h), ptr<void>(a1), ptr<void>(b1), ptr<void>(a3), ptr<void>(b3),
                                  ptr<void>(a2), ptr<void>(b2)), "layerSetLora");
}

JNIEXPORT void FN(layerForward)(JNIEnv* env, jclass, jlong h, jint t, jint k, jint rows, jlong offsets,
                                jlong tokenOfRow, jlong weightOfRow, jlong rowOfPair, jlong x, jlong out) {
    check(env, smk_layer_forward(ptr<SmkLayer>(h), t, k, rows, ptr<int>(offsets), ptr<int>(tokenOfRow),
                                 ptr<float>(weightOfRow), ptr<int>(rowOfPair), ptr<void>(x), ptr<void>(out)),
          "layerForward");
}

JNIEXPORT void FN(layerBackward)(JNIEnv* env, jclass, jlong h, jlong dout, jlong dx, jlong da1, jlong db1, jlong da3,
                                 jlong db3, jlong da2, jlong db2, jlong dgates) {
    check(env, smk_layer_backward(ptr<SmkLayer>(h), ptr<void>(dout), ptr<void>(dx), ptr<float>(da1), ptr<float>(db1),
                                  ptr<float>(da3), ptr<float>(db3), ptr<float>(da2), ptr<float>(db2),
                                  ptr<float>(dgates)), "layerBackward");
}

// p: offsets, tokenOfRow, weightOfRow, rowOfPair, x, out, dout, dx, da1, db1, da3, db3, da2, db2, dgates
JNIEXPORT jfloat FN(layerTime)(JNIEnv* env, jclass, jlong h, jint t, jint k, jint rows, jlongArray args, jint warmup,
                               jint iters) {
    if (env->GetArrayLength(args) != 15) {
        check(env, 1, "layerTime (expects 15 device pointers)");
        return 0;
    }
    jlong p[15];
    env->GetLongArrayRegion(args, 0, 15, p);
    float ms = 0;
    check(env, smk_layer_time(ptr<SmkLayer>(h), t, k, rows, ptr<int>(p[0]), ptr<int>(p[1]), ptr<float>(p[2]),
                              ptr<int>(p[3]), ptr<void>(p[4]), ptr<void>(p[5]), ptr<void>(p[6]), ptr<void>(p[7]),
                              ptr<float>(p[8]), ptr<float>(p[9]), ptr<float>(p[10]), ptr<float>(p[11]),
                              ptr<float>(p[12]), ptr<float>(p[13]), ptr<float>(p[14]), warmup, iters, &ms),
          "layerTime");
    return ms;
}

}  // extern "C"

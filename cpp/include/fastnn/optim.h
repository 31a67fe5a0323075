#pragma once
#include <cstdint>

namespace fastnn {

// Fused optimizer updates over one flat parameter buffer p (n) with its gradient g (n).
// weight_decay is L2 (added to the gradient: g + wd·p) unless stated otherwise.
// zero_grads: set g to 0 once it has been read, ready for the next backward pass to add
// into (the zeroing a training step needs anyway, done while g is still in cache).

// SGD. momentum == 0: p −= lr·g'. Else v = momentum·v + g';
// p −= lr·v, or with nesterov p −= lr·(g' + momentum·v). v may be nullptr when momentum == 0.
void sgd_step(float* p, float* v, float* g, int64_t n, float lr, float momentum,
              bool nesterov, float weight_decay, bool zero_grads);

// Adam (decoupled=false: L2 through the gradient) and AdamW (decoupled=true:
// p −= lr·wd·p before the Adam step). step is the 1-based step count for bias correction.
void adam_step(float* p, float* m, float* v, float* g, int64_t n, float lr,
               float beta1, float beta2, float eps, float weight_decay, bool decoupled,
               int64_t step, bool zero_grads);

// AdaGrad: acc += g'²; p −= lr·g'/(√acc + eps).
void adagrad_step(float* p, float* acc, float* g, int64_t n, float lr, float eps,
                  float weight_decay, bool zero_grads);

}  // namespace fastnn

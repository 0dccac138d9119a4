// The difopt_accel operator schemas. Each device's kernels are registered beside them
// (<op>_cpu.cpp, <op>_cuda.cpp); the fake kernels and autograd formulas live in Python
// (src/difopt_accel/_ops.py).
//
// Every op family has a functional op (differentiable; its first output is
// params + factor * direction, or factor * direction when params is empty), an in-place op
// (`accumulate`: out += factor * direction, else out = factor * direction) and the exact
// vector-Jacobian product of the functional op. A `count` is the step number t >= 1 of the
// update, a 0-d int64 tensor on the CPU or on the tensors' device.
#include <torch/library.h>

TORCH_LIBRARY(difopt_accel, m) {
  // Adam: (out, mu', nu').
  m.def(
      "adam(Tensor[] grads, Tensor[] mu, Tensor[] nu, Tensor[] params, Tensor count, "
      "float b1, float b2, float eps, float eps_root, float factor) "
      "-> (Tensor[], Tensor[], Tensor[])");
  m.def(
      "adam_(Tensor(a!)[] out, Tensor(b!)[] mu, Tensor(c!)[] nu, Tensor[] grads, "
      "Tensor count, float b1, float b2, float eps, float eps_root, float factor, "
      "bool accumulate) -> ()");
  m.def(
      "adam_backward(Tensor[] grad_out, Tensor[] grad_mu, Tensor[] grad_nu, Tensor[] grads, "
      "Tensor[] mu_new, Tensor[] nu_new, Tensor count, float b1, float b2, float eps, "
      "float eps_root, float factor, bool moment_grads) -> (Tensor[], Tensor[], Tensor[])");

  // RMSProp, uncentered or centered: (out, mu', nu'); mu and mu' are empty lists unless
  // centered.
  m.def(
      "rms(Tensor[] grads, Tensor[] mu, Tensor[] nu, Tensor[] params, float alpha, float eps, "
      "float factor, bool centered) -> (Tensor[], Tensor[], Tensor[])");
  m.def(
      "rms_(Tensor(a!)[] out, Tensor(b!)[] mu, Tensor(c!)[] nu, Tensor[] grads, float alpha, "
      "float eps, float factor, bool centered, bool accumulate) -> ()");
  m.def(
      "rms_backward(Tensor[] grad_out, Tensor[] grad_mu, Tensor[] grad_nu, Tensor[] grads, "
      "Tensor[] mu_new, Tensor[] nu_new, float alpha, float eps, float factor, bool centered, "
      "bool moment_grads) -> (Tensor[], Tensor[], Tensor[])");

  // Heavy-ball momentum (difopt.transform.trace): (out, trace'). The step is linear, so its
  // backward needs only the incoming gradients and the step number.
  m.def(
      "trace(Tensor[] grads, Tensor[] trace, Tensor[] params, Tensor count, float momentum, "
      "float dampening, bool nesterov, float factor) -> (Tensor[], Tensor[])");
  m.def(
      "trace_(Tensor(a!)[] out, Tensor(b!)[] trace, Tensor[] grads, Tensor count, "
      "float momentum, float dampening, bool nesterov, float factor, bool accumulate) -> ()");
  m.def(
      "trace_backward(Tensor[] grad_out, Tensor[] grad_trace, Tensor count, float momentum, "
      "float dampening, bool nesterov, float factor, bool trace_grads) "
      "-> (Tensor[], Tensor[])");

  // One step of Anderson acceleration on a batch, without a graph (difopt-implicit's
  // fixed-point solver): writes z + g and g into slot `slot` of the memory (`images`,
  // `residuals`: (B, m, n)), row and column `slot` of their Gram matrix (`gram`: (B, m, m))
  // over the first k slots, and returns the mixed iterate (B, n). CPU only (anderson_cpu.cpp
  // has the definition).
  m.def(
      "anderson_step_(Tensor(a!) images, Tensor(b!) residuals, Tensor(c!) gram, Tensor z, "
      "Tensor g, int slot, int k, float ridge, float damping) -> Tensor");
}

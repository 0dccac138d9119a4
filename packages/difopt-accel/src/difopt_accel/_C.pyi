# The compiled extension module (csrc/module.cpp); importing it registers the operators.
WITH_CUDA: bool
WITH_OPENMP: bool
TORCH_VERSION: str

# Written by CMakeLists.txt at build time: what the extension was built against.
TORCH_VERSION: str
WITH_CUDA: bool

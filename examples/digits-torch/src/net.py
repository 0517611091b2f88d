"""The network and the PyTorch settings every step that runs it makes.

`setup_torch` is the whole list of what PyTorch needs, beyond the sandbox,
to compute the same bits on every run; README.md beside `src/` explains
each item.
"""

import common
import torch

# Everything runs on the CPU. The Debian build of PyTorch has no CUDA; a
# build with it would pick GPU kernels (some of them nondeterministic, all
# of them GPU-model dependent) only if tensors were moved there, which
# these scripts never do.
DEVICE = torch.device("cpu")


def setup_torch(threads, seed):
    """Pin what PyTorch's results depend on. Call once, before any tensor
    is created.

    threads  the intra-op thread count. Some ATen kernels split a sum
             into one part per thread and add the parts up (batch norm
             over a batch's rows, a sum to one number over 32768 or more
             elements), so its last bits depend on this count; not on the
             number of cores.
    seed     seeds PyTorch's global generator (weight initialization, batch
             order). None leaves it as PyTorch starts it: seeded from the
             operating system, different in every process.
    """
    torch.set_num_threads(threads)
    # Refuse any operation PyTorch knows to be nondeterministic (an error
    # instead of silently different bits).
    torch.use_deterministic_algorithms(True)
    if seed is not None:
        torch.manual_seed(seed)


def cpu_capability():
    """The SIMD level ATen dispatches its CPU kernels to (e.g. `AVX2`, or
    `NO AVX` when capped by ATEN_CPU_CAPABILITY=default), as reported by
    torch.__config__.show()."""
    for line in torch.__config__.show().splitlines():
        line = line.strip()
        if line.startswith("- CPU capability usage:"):
            return line.split(":", 1)[1].strip()
    return None


class DigitsMLP(torch.nn.Module):
    """A 64-hidden-10 perceptron with batch normalization.

    Pixels are scaled from 0..16 to 0..1, then: linear layer `fc1`, batch
    normalization `bn1`, ReLU, linear layer `fc2` (logits). State dict
    entries: `fc1.weight`, `fc1.bias`, `bn1.weight`, `bn1.bias`,
    `bn1.running_mean`, `bn1.running_var`, `bn1.num_batches_tracked`,
    `fc2.weight`, `fc2.bias`.

    In training, `bn1` normalizes each hidden unit by the mean and variance
    of the batch. On the CPU, ATen computes them (and their gradients) by
    splitting the batch's rows among the threads and adding the per-thread
    sums, so from the first step on the bits depend on the thread count.
    """

    def __init__(self, hidden):
        super().__init__()
        self.fc1 = torch.nn.Linear(common.PIXELS, hidden)
        self.bn1 = torch.nn.BatchNorm1d(hidden)
        self.fc2 = torch.nn.Linear(hidden, common.CLASSES)

    def forward(self, pixels):
        """Logits [n, 10] from pixel counts [n, 64] (float32, 0..16)."""
        x = pixels / common.PIXEL_MAX
        return self.fc2(torch.relu(self.bn1(self.fc1(x))))


def pixels_tensor(array):
    """uint8 pixel counts (numpy) as a float32 tensor on the CPU."""
    return torch.from_numpy(array.astype("<f4")).to(DEVICE)


def labels_tensor(array):
    """int64 digits (numpy) as a tensor on the CPU."""
    return torch.from_numpy(array.astype("<i8")).to(DEVICE)

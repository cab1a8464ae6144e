"""Peer: the U-Net of models/unet.py (upsample="transpose") in PyTorch, for the inference and train benchmarks.

Layer for layer what shared/peers/unet_torch.py builds: per encoder level two (3x3 conv without bias, BatchNorm,
ReLU) at widths F, 2F, 4F, 8F, each level followed by a 2x2 max-pool; a middle block at 16F; per decoder level a
2x2 stride-2 transposed conv with bias, a concat with the skip and a block; a 1x1 conv head. Inference runs the
way a PyTorch user serves it: eval mode, torch.inference_mode, channels_last tensors, argmax over classes.
tools/bench/predict.py imports it when torch is installed (`pip install .[peers]`) and skips it otherwise.

usage: python tools/peers/unet_torch.py [BATCH HEIGHT WIDTH CLASSES BASE_WIDTH [train [amp]]]
With `train` it times the train step (Adam 1e-3, cross-entropy, eager mode, channels_last) and prints one JSON
line {"images_per_second": ...} for tools/bench/train.py; with `amp` the forward pass and loss run under
`torch.autocast` in bfloat16 (PyTorch's mixed precision: float32 weights and optimiser), the peer of our
bfloat16 compute. Everything runs on the GPU when torch sees one (CUDA), else on the CPU; GPU timings wait for
the device (`torch.cuda.synchronize`).
"""
from __future__ import annotations

import json
import statistics
import sys
import time

import torch
from torch import nn

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def synchronize() -> None:
    """Wait for the device's queued work: CUDA runs asynchronously, so a timer must wait before it reads."""
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def conv_block(in_width: int, out_width: int) -> nn.Sequential:
    layers = []
    for width in (in_width, out_width):
        layers += [nn.Conv2d(width, out_width, 3, padding=1, bias=False), nn.BatchNorm2d(out_width),
                   nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class UNet(nn.Module):
    def __init__(self, num_classes: int, base_width: int = 16, depth: int = 4):
        super().__init__()
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.encoder = nn.ModuleList(conv_block(i, o) for i, o in zip([3] + widths[:-2], widths[:-1]))
        self.middle = conv_block(widths[-2], widths[-1])
        levels = list(reversed(range(depth)))
        self.upsample = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in levels)
        self.decoder = nn.ModuleList(conv_block(2 * widths[i], widths[i]) for i in levels)
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x):
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x = nn.functional.max_pool2d(x, 2)
        x = self.middle(x)
        for up, block in zip(self.upsample, self.decoder):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


def make_inference(batch: int, height: int, width: int, num_classes: int, base_width: int = 16):
    """A function that runs one batch through the model: forward and argmax, as a PyTorch user serves it."""
    model = UNet(num_classes, base_width).eval().to(DEVICE, memory_format=torch.channels_last)
    images = torch.randn(batch, 3, height, width, device=DEVICE).contiguous(memory_format=torch.channels_last)

    def infer():
        with torch.inference_mode():
            classes = model(images).argmax(dim=1)
        synchronize()
        return classes

    return infer


def inference_images_per_second(batch: int, height: int, width: int, num_classes: int, base_width: int = 16,
                                repeats: int = 5, warmup: int = 2) -> float:
    """Median images/second of `repeats` timed batches after `warmup` untimed ones."""
    infer = make_inference(batch, height, width, num_classes, base_width)
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        infer()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def train_images_per_second(batch: int, height: int, width: int, num_classes: int, base_width: int = 16,
                            steps: int = 5, repeats: int = 5, amp: bool = False) -> float:
    """Median images/second over `repeats` rounds of `steps` train steps, after 3 untimed steps."""
    model = UNet(num_classes, base_width).train().to(DEVICE, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    images = torch.randn(batch, 3, height, width, device=DEVICE).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, num_classes, (batch, height, width), device=DEVICE)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=amp):
            loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    synchronize()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize()
        rates.append(steps * batch / (time.perf_counter() - start))
    return statistics.median(rates)


def version() -> str:
    where = torch.cuda.get_device_name() if DEVICE == "cuda" else f"{torch.get_num_threads()} CPU threads"
    return f"torch {torch.__version__}, {where}"


if __name__ == "__main__":
    b, h, w, k, f = (int(v) for v in (sys.argv[1:6] if len(sys.argv) > 5 else (8, 368, 480, 11, 16)))
    if sys.argv[6:7] == ["train"]:
        amp = sys.argv[7:8] == ["amp"]
        print(json.dumps({"images_per_second": train_images_per_second(b, h, w, k, f, amp=amp),
                          "framework": version(), "amp": amp}))
        sys.exit()
    print(f"{version()}: inference B={b} {h}x{w} K={k} F={f}: "
          f"{inference_images_per_second(b, h, w, k, f):.2f} images/s")

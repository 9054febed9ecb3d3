"""Whole training steps in PyTorch for `cargo xtask bench --compare`: the same models,
batch sizes, input sizes and optimizer as xtask/src/bench/steps.rs (forward, mean
cross-entropy, backward, SGD with momentum 0.9 and weight decay 1e-4), timed as one
step each after a warm-up step; median, min and max of `reps` steps.

Models are written out here (no torchvision needed) with torchvision's layouts:
MLP 784-128-10, LeNet-style CNN, the 32x32 AlexNet variant, ResNet-18/50.
"""

import time

import torch
from torch import nn


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))


def lenet():
    return nn.Sequential(
        nn.Conv2d(1, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(512, 10))


def alexnet(variant, classes):
    """`variant` "cifar" (32x32 inputs) or "paper" (224x224, two-group convs and LRN)."""
    if variant == "cifar":
        features = [nn.Conv2d(3, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
                    nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
                    nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
                    nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
                    nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2)]
        flat, hidden = 256 * 3 * 3, 1024
    else:
        lrn = lambda: nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)
        features = [nn.Conv2d(3, 96, 11, 4, 2), nn.ReLU(), lrn(), nn.MaxPool2d(3, 2),
                    nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(), lrn(), nn.MaxPool2d(3, 2),
                    nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),
                    nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(),
                    nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(), nn.MaxPool2d(3, 2)]
        flat, hidden = 256 * 6 * 6, 4096
    return nn.Sequential(*features, nn.Flatten(),
                         nn.Dropout(0.5), nn.Linear(flat, hidden), nn.ReLU(),
                         nn.Dropout(0.5), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, classes))


class Block(nn.Module):
    """torchvision's BasicBlock (expansion 1) or Bottleneck (expansion 4)."""

    def __init__(self, cin, width, stride, bottleneck):
        super().__init__()
        cout = width * 4 if bottleneck else width
        conv = lambda i, o, k, s: nn.Conv2d(i, o, k, s, k // 2, bias=False)
        if bottleneck:
            self.body = nn.Sequential(conv(cin, width, 1, 1), nn.BatchNorm2d(width), nn.ReLU(),
                                      conv(width, width, 3, stride), nn.BatchNorm2d(width), nn.ReLU(),
                                      conv(width, cout, 1, 1), nn.BatchNorm2d(cout))
        else:
            self.body = nn.Sequential(conv(cin, width, 3, stride), nn.BatchNorm2d(width), nn.ReLU(),
                                      conv(width, width, 3, 1), nn.BatchNorm2d(width))
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(conv(cin, cout, 1, stride), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.down is None else self.down(x)
        return torch.relu(self.body(x) + identity)


def resnet(depth, classes):
    blocks, bottleneck = {18: ([2, 2, 2, 2], False), 50: ([3, 4, 6, 3], True)}[depth]
    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
              nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for stage, n in enumerate(blocks):
        width = 64 << stage
        for b in range(n):
            layers.append(Block(cin, width, 2 if b == 0 and stage > 0 else 1, bottleneck))
            cin = width * 4 if bottleneck else width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes))


def workloads(cpu, quick):
    """(model name, batch, (C, H, W), classes, builder) as in steps.rs."""
    w = [("mlp", 64, (1, 28, 28), 10, mlp), ("lenet", 64, (1, 28, 28), 10, lenet)]
    if cpu:
        w += [("alexnet", 16, (3, 32, 32), 10, lambda: alexnet("cifar", 10)),
              ("resnet18", 8, (3, 64, 64), 10, lambda: resnet(18, 10))]
        if not quick:
            w.append(("resnet50", 4, (3, 64, 64), 10, lambda: resnet(50, 10)))
    else:
        w += [("alexnet", 32, (3, 224, 224), 1000, lambda: alexnet("paper", 1000)),
              ("resnet18", 32, (3, 224, 224), 1000, lambda: resnet(18, 1000)),
              ("resnet50", 32, (3, 224, 224), 1000, lambda: resnet(50, 1000))]
    return w


def run(dev, sync, reps, quick, wanted):
    """Times every selected model; returns the JSON `steps` entries and prints a table."""
    out = []
    print(f"\n{'step':<10} {'batch':>6} {'median ms':>10} {'min ms':>10} {'images/s':>10}")
    for name, batch, chw, classes, build in workloads(dev.type == "cpu", quick):
        if not wanted(f"step_{name}"):
            continue
        torch.manual_seed(0)
        model = build().to(dev).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        x = torch.rand(batch, *chw, device=dev) * 2 - 1
        y = torch.arange(batch, device=dev) % classes
        loss_fn = nn.CrossEntropyLoss()

        def step():
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            return loss.item()  # reads the loss back, like wgtrain's step

        step()
        sync()
        ms = []
        for _ in range(reps):
            t0 = time.perf_counter()
            step()
            sync()
            ms.append((time.perf_counter() - t0) * 1e3)
        ms.sort()
        med = ms[len(ms) // 2]
        print(f"{name:<10} {batch:>6} {med:10.2f} {ms[0]:10.2f} {batch / med * 1e3:10.1f}")
        out.append(dict(model=name, batch=batch, input=f"[{chw[1]}, {chw[2]}, {chw[0]}]",
                        images_per_s=batch / med * 1e3, median_ms=med, min_ms=ms[0],
                        max_ms=ms[-1]))
    return out

#!/usr/bin/env python3
"""Move torchvision weights to and from wgtrain (safetensors, torchvision's names).

    # a torchvision model's state_dict -> safetensors that wgtrain loads
    python tools/torchvision_weights.py export resnet18 resnet18.safetensors [--pretrained]

    # a state_dict written by wgtrain (wgtrain_models::torch::save_state_dict) -> torchvision
    python tools/torchvision_weights.py check resnet18 trained.safetensors [--classes 10]

`check` loads the file with `load_state_dict(strict=True)` (every name and shape must
match), runs one forward pass in eval mode and prints the top classes of a constant image,
so that the same input can be compared with wgtrain.

Needs: torch, torchvision, safetensors (pip install torch torchvision safetensors).
--pretrained downloads torchvision's ImageNet weights (network access needed once).
"""

import argparse
import sys

import torch
import torchvision
from safetensors.torch import load_file, save_file


def build(name: str, classes: int, pretrained: bool) -> torch.nn.Module:
    weights = "DEFAULT" if pretrained else None
    if pretrained and classes != 1000:
        sys.exit("--pretrained weights have 1000 classes")
    return torchvision.models.get_model(name, weights=weights, num_classes=classes)


def export(args: argparse.Namespace) -> None:
    model = build(args.model, args.classes, args.pretrained)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, args.file, metadata={"format": "pt", "model": args.model})
    params = sum(v.numel() for k, v in state.items() if not k.endswith("num_batches_tracked"))
    print(f"wrote {args.file}: {len(state)} tensors, {params:,} values")


def check(args: argparse.Namespace) -> None:
    model = build(args.model, args.classes, False)
    state = load_file(args.file)
    model.load_state_dict(state, strict=True)
    model.eval()
    size = args.image
    x = torch.full((1, 3, size, size), 0.5)
    with torch.no_grad():
        logits = model(x)[0]
    top = torch.topk(logits, min(5, logits.numel()))
    print(f"{args.file} loads into torchvision {args.model} (strict).")
    print("logits of a constant 0.5 image, top classes:")
    for value, index in zip(top.values.tolist(), top.indices.tolist()):
        print(f"  class {index}: {value:.6f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("export", "check"):
        p = sub.add_parser(command)
        p.add_argument("model", help="torchvision model name: alexnet, resnet18 ... resnet152")
        p.add_argument("file", help="safetensors file to write (export) or read (check)")
        p.add_argument("--classes", type=int, default=1000)
        p.add_argument("--image", type=int, default=224, help="input size for check")
        if command == "export":
            p.add_argument("--pretrained", action="store_true")
    args = parser.parse_args()
    {"export": export, "check": check}[args.command](args)


if __name__ == "__main__":
    main()

"""The step cost of the methods that act on the weights, the optimizer step and the model:
EMA, SAM, channels-last and stochastic depth, each against the same Trainer loop without
the method, in one run (see benchmarks/method_chain.py for how the chain measures).

On the small CNN of benchmarks/label_smoothing.py (3x32x32 inputs, batch 128, 10
classes, one thread, CPU):

  ema                EMA(decay=0.999), an update after every batch
  ema_every_10       EMA(decay=0.999, every=10)
  swa                SWA(start_epoch=0, swa_lr=0.01): its rate set before every batch
                     (its averaging, once an epoch, and update_bn at the end are apart)
  sam                SAM(rho=0.05): two forwards and two backwards a step
  channels_last      ChannelsLast(): the model and inputs laid out channels-last

and, on a CIFAR ResNet-18 of width 16 (residual blocks to wrap), against the same
ResNet without the method:

  stochastic_depth   StochasticDepth(drop_rate=0.2)

    python benchmarks/weights_and_model.py   # targets: ema <= 1.10x, ema_every_10 <= 1.02x;
                                             # sam about 2x; the others: reported
    python benchmarks/weights_and_model.py --repeats 10 --steps 30
"""

from __future__ import annotations

import argparse
import functools

import torch
from method_chain import make_batches, run_chain, step_time

from loom.algorithms import EMA, SAM, SWA, ChannelsLast, StochasticDepth
from loom.models import CifarResNet

VARIANTS = {
    "ema": lambda: [EMA(decay=0.999)],
    "ema_every_10": lambda: [EMA(decay=0.999, every=10)],
    "swa": lambda: [SWA(start_epoch=0, swa_lr=0.01)],
    "sam": lambda: [SAM(rho=0.05)],
    "channels_last": lambda: [ChannelsLast()],
}


def resnet() -> torch.nn.Module:
    return CifarResNet(num_classes=10, depth=18, width=16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    batches = make_batches(args.steps)
    small = run_chain(
        {name: functools.partial(lambda make: step_time(batches, make()), make)
         for name, make in VARIANTS.items()},
        lambda: step_time(batches, []),
        args.repeats,
    )  # fmt: skip
    print(small.table(f"small CNN, batch 128, 1 thread, {args.steps} steps x {args.repeats}"))
    resnet_batches = batches[: max(3, args.steps // 4)]  # a ResNet step costs ~10 CNN steps
    deep = run_chain(
        {"stochastic_depth": lambda: step_time(resnet_batches, [StochasticDepth(0.2)], resnet)},
        lambda: step_time(resnet_batches, [], resnet),
        args.repeats,
    )
    print()
    print(deep.table(f"CIFAR ResNet-18 width 16, batch 128, {len(resnet_batches)} steps"))


if __name__ == "__main__":
    main()

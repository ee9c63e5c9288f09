"""Layer-wise relevance propagation for the HRF classifiers with zennit (METHODS.md section 3, "XAI for Transformers").

CCT: conservative propagation through the transformer — attention and sequence-pooling softmax held constant (AH
rule), LayerNorm's standard deviation held constant (LN rule), GELU by the identity rule (f(x)/x) — as zennit hooks,
so that Gradient x Input above the tokenizer is conservative; at the tokenizer output a hook turns that into
relevance, and zennit's LRP rules (Epsilon first conv, ZPlus convs, Pass ReLU) carry it to the pixels. The
positional embedding receives its share too: Σ relevance(pixels) + Σ relevance(positions) = logit when the network
has no biases (biases absorb their own share otherwise).
MIL: zennit rules for the patch encoder (Epsilon first conv, ZPlus convs, Epsilon Linear, Pass ReLU) and the attention
weights held constant in the bag pooling (epsilon rule on Σ a_k h_k).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from zennit.core import Composite, Hook, Stabilizer
from zennit.rules import Epsilon, Flat, Pass, ZPlus

from oct_wsss.models.cct import Cct
from oct_wsss.models.hrf_labels import explained_logit
from oct_wsss.models.mil import GatedAttentionPool, MilNet

FIRST_RULES: tuple[str, ...] = ("epsilon", "flat")
EPSILON = 1e-6


class ConstantSoftmax(Hook):
    """AH rule: the softmax output is a constant, so no gradient reaches its input (q·k or the pooling scores)."""

    def backward(self, module: nn.Module, grad_input: tuple, grad_output: tuple) -> tuple:
        return tuple(None if g is None else torch.zeros_like(g) for g in grad_input)


class ConstantStdLayerNorm(Hook):
    """LN rule: LayerNorm with its standard deviation held constant (the centring and affine parts stay)."""

    def forward(self, module: nn.Module, input: tuple, output: Tensor) -> None:
        self.stored_tensors["input"] = input[0]

    def backward(self, module: nn.LayerNorm, grad_input: tuple, grad_output: tuple) -> tuple:
        x = self.stored_tensors["input"].detach().requires_grad_(True)
        with torch.enable_grad():
            centred = x - x.mean(-1, keepdim=True)
            std = (centred.pow(2).mean(-1, keepdim=True) + module.eps).sqrt().detach()
            y = centred / std
            if module.weight is not None:
                y = y * module.weight.detach() + module.bias.detach()
        (grad,) = torch.autograd.grad(y, x, grad_output[0])
        return (grad,)


class IdentityGelu(Hook):
    """Identity rule for GELU: the backward passes (f(x)/x) · grad, a linear gate fixed at the forward's value."""

    def forward(self, module: nn.Module, input: tuple, output: Tensor) -> None:
        self.stored_tensors["gain"] = (output / Stabilizer(EPSILON)(input[0])).detach()

    def backward(self, module: nn.Module, grad_input: tuple, grad_output: tuple) -> tuple:
        return (grad_output[0] * self.stored_tensors["gain"],)


class GradientToRelevance(Hook):
    """At an identity module: the gradient arriving from above times the activation becomes the relevance below."""

    def forward(self, module: nn.Module, input: tuple, output: Tensor) -> None:
        self.stored_tensors["output"] = output.detach()

    def backward(self, module: nn.Module, grad_input: tuple, grad_output: tuple) -> tuple:
        return (grad_output[0] * self.stored_tensors["output"],)


class ConstantAttentionPool(Hook):
    """MIL pooling with the attention weights a_k held constant: epsilon rule on z = Σ_k a_k h_k."""

    def forward(self, module: GatedAttentionPool, input: tuple, output: Tensor) -> None:
        self.stored_tensors["input"] = input[0].detach()
        self.stored_tensors["weights"] = module.last_weights

    def backward(self, module: nn.Module, grad_input: tuple, grad_output: tuple) -> tuple:
        h, a = self.stored_tensors["input"], self.stored_tensors["weights"][..., None]
        z = (a * h).sum(1, keepdim=True)
        return (h * a * grad_output[0][:, None] / Stabilizer(EPSILON)(z),)


def _first_rule(name: str) -> Hook:
    if name not in FIRST_RULES:
        raise ValueError(f"first-layer rule must be one of {FIRST_RULES}, got {name!r}")
    return Epsilon(EPSILON) if name == "epsilon" else Flat(EPSILON)


def cct_composite(first_rule: str = "epsilon") -> Composite:
    """Transformer rules (AH, LN, identity GELU) above the tokenizer, zennit LRP rules in it."""
    first = _first_rule(first_rule)

    def module_map(ctx: dict, name: str, module: nn.Module) -> Hook | None:
        if name.startswith("tokenizer.layers"):
            if isinstance(module, nn.Conv2d):
                rule = ZPlus(EPSILON) if ctx.get("seen_conv") else first
                ctx["seen_conv"] = True
                return rule
            return Pass() if isinstance(module, nn.ReLU) else None
        if name == "tokenizer.out":
            return GradientToRelevance()
        if isinstance(module, nn.Softmax):
            return ConstantSoftmax()
        if isinstance(module, nn.LayerNorm):
            return ConstantStdLayerNorm()
        return IdentityGelu() if isinstance(module, nn.GELU) else None

    return Composite(module_map=module_map)


def mil_composite(first_rule: str = "epsilon") -> Composite:
    """zennit rules for the patch encoder and head, constant attention weights in the pooling."""
    first = _first_rule(first_rule)

    def module_map(ctx: dict, name: str, module: nn.Module) -> Hook | None:
        if name.startswith("pool"):
            return ConstantAttentionPool() if name == "pool" else None
        if isinstance(module, nn.Conv2d):
            rule = ZPlus(EPSILON) if ctx.get("seen_conv") else first
            ctx["seen_conv"] = True
            return rule
        if isinstance(module, nn.Linear):
            return Epsilon(EPSILON)
        return Pass() if isinstance(module, nn.ReLU) else None

    return Composite(module_map=module_map)


@dataclass
class Relevance:
    """Pixel relevance (B, H, W), relevance given to the positional embedding (B,; 0 for MIL), explained logits."""

    pixels: Tensor
    positions: Tensor
    logits: Tensor
    outputs: Tensor


def relevance(net: Cct | MilNet, x: Tensor, target: Callable[[Tensor], Tensor] | None = None,
              first_rule: str = "epsilon") -> Relevance:
    """LRP of the HRF logit (or of ``target(outputs)``, a (B, n_outputs) selection) for normalised B-scans x.

    The network must be in eval mode (dropout and drop-path off), else relevance is not conservative.
    """
    if net.training:
        raise ValueError("relevance needs the network in eval mode (net.eval())")
    x = x.detach().clone().requires_grad_(True)
    is_cct = isinstance(net, Cct)
    composite = cct_composite(first_rule) if is_cct else mil_composite(first_rule)
    captured: dict[str, Tensor] = {}
    handle = net.position.register_forward_hook(lambda m, i, o: captured.update(pos=o)) if is_cct else None
    try:
        with composite.context(net), torch.enable_grad():
            out = net(x)
            select = explained_logit(out, net.config.label_type) if target is None else target(out)
            # CCT: gradient semantics at the top (AH/LN rules); MIL: zennit relevance semantics from the logit down.
            seed = select if is_cct else select * out.detach()
            wrt = (x, captured["pos"]) if is_cct else (x,)
            grads = torch.autograd.grad(out, wrt, grad_outputs=seed)
    finally:
        if handle is not None:
            handle.remove()
    pos = (captured["pos"].detach() * grads[1]).sum((1, 2)) if is_cct else torch.zeros(x.shape[0])
    logits = (out.detach() * select).sum(1)
    return Relevance(pixels=grads[0].detach().sum(1), positions=pos.detach(), logits=logits, outputs=out.detach())

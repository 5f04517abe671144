"""Which modules the ``"layers"`` pass hooks and which parameters it can cover
(:class:`LayerPlan`), from the rules registered for the model's layer types
(:mod:`gradkit.grads.rules`); the pass itself is :mod:`gradkit.grads.layerpass`."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from gradkit.grads.freeparams import free_parameters
from gradkit.grads.rules import holds_free_parameters, replay_for, rule_for, unsupported_reason

__all__ = ["LayerPlan"]


def _own_trainable(m: nn.Module) -> list[str]:
    return [k for k, p in m._parameters.items() if p is not None and p.requires_grad]


def _slots(m: nn.Module) -> list[tuple[nn.Module, str]]:
    """``(holder, name)`` of the trainable parameters the pass covers through ``m``: its own, or
    for a replay rule those of its whole subtree (attention's ``out_proj``)."""
    if replay_for(m) is not None:
        return [(sub, k) for sub in m.modules() for k in _own_trainable(sub)]
    return [(m, k) for k in _own_trainable(m)]


@dataclass
class LayerPlan:
    """Which modules the pass hooks (``owners``: module -> name) and which parameters it can
    cover at all (``covered``: ids of parameters whose every owner module has a rule);
    ``unsupported``: module name -> why it has no rule; ``slots``: the parameters an owner's
    calls cover (:func:`_slots`)."""

    owners: dict[nn.Module, str] = field(default_factory=dict)
    unsupported: dict[str, str] = field(default_factory=dict)
    owners_of: dict[int, list[nn.Module]] = field(default_factory=dict)
    params: dict[int, Tensor] = field(default_factory=dict)
    covered: set[int] = field(default_factory=set)
    slots: dict[nn.Module, list[tuple[nn.Module, str]]] = field(default_factory=dict)
    free: dict[int, tuple] = field(default_factory=dict)  # a container's own (freeparams)
    fallen: set[int] = field(default_factory=set)  # free parameters excluded: by fallback

    @classmethod
    def of(cls, model: nn.Module) -> LayerPlan:
        plan, inside, holders = cls(), set(), []  # inside: modules a replay subtree covers
        for name, m in model.named_modules(remove_duplicate=False):
            if m in inside:
                continue
            if replay_for(m) is not None:
                inside |= set(m.modules()) - {m}
            slots = _slots(m)
            if not slots:
                continue
            for holder, k in slots:
                p = holder._parameters[k]
                plan.owners_of.setdefault(id(p), []).append(m)
                plan.params[id(p)] = p
            reason = unsupported_reason(m)
            if reason and holds_free_parameters(m):
                holders.append(m)
            elif reason:
                plan.unsupported[name or type(m).__name__] = reason
            elif m not in plan.owners:
                _, registered = rule_for(m)
                if type(m).forward is not registered.forward:
                    plan.unsupported[name or type(m).__name__] = (
                        f"{type(m).__name__} overrides the forward of {registered.__name__}, "
                        "for which its rule was written")
                else:
                    plan.owners[m], plan.slots[m] = name or type(m).__name__, slots
        plan.free = free_parameters(model, holders)
        plan.covered = {pid for pid, ms in plan.owners_of.items()
                        if all(m in plan.owners for m in ms)} | set(plan.free)
        return plan

    def exclude(self, names: dict[str, str]) -> None:
        """Treat the named modules as unsupported from now on (a rejection is for the call)."""
        for m, name in list(self.owners.items()):
            if name in names:
                del self.owners[m]
                self.unsupported[name] = names[name]
        for pid, (_, _, name) in list(self.free.items()):
            if name in names:
                del self.free[pid]
                self.fallen.add(pid)
                self.unsupported[name] = names[name]
        self.covered = {pid for pid in self.covered if pid in self.free
                        or all(m in self.owners for m in self.owners_of[pid])}

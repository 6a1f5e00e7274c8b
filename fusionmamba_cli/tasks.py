"""The five fusion tasks, their modality order, and THE one place that maps the command-line
order (the task's name order) to the network's order (the authors': x1 = visible / MRI / phase
contrast, x2 = IR / CT / PET / SPECT / GFP)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    """A fusion task. `modalities` is the user's order (the task name's, e.g. ir then vis)."""

    name: str
    modalities: tuple[str, str]
    x1_index: int  # which of the two user inputs is the network's x1
    colour_index: int  # whose chroma is kept when both inputs are colour

    def to_network_order(self, first, second):
        """(user's first, user's second) -> (x1, x2) for the network."""
        return (first, second) if self.x1_index == 0 else (second, first)


TASKS: dict[str, Task] = {
    "ir_vis": Task("ir_vis", ("ir", "vis"), x1_index=1, colour_index=1),
    "ct_mri": Task("ct_mri", ("ct", "mri"), x1_index=1, colour_index=0),
    "pet_mri": Task("pet_mri", ("mri", "pet"), x1_index=0, colour_index=1),
    "spect_mri": Task("spect_mri", ("mri", "spect"), x1_index=0, colour_index=1),
    "gfp_pc": Task("gfp_pc", ("gfp", "pc"), x1_index=1, colour_index=0),
}
# Without --task: the first input plays IR/CT/GFP (x2), the second visible/MRI/PC (x1), as in three
# of the five tasks; when both are colour the second's chroma is kept.
GENERIC = Task("generic", ("a", "b"), x1_index=1, colour_index=1)
# The modalities that come in colour (visible may also be grey); the others are always grey.
COLOUR_MODALITIES = frozenset({"vis", "pet", "spect", "gfp"})
TASK_NAMES = tuple(TASKS)


def get_task(name: str | None) -> Task:
    """The task of that name, or the generic convention for None."""
    if name is None:
        return GENERIC
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}") from None


def order_warning(task: Task, first_colour: bool, second_colour: bool) -> str | None:
    """A warning when the inputs' colours contradict the task's order (e.g. PET given first for
    pet_mri, or a colour PET image under ct_mri); None when they fit or cannot tell."""
    if task is GENERIC or not (first_colour or second_colour):
        return None
    order = " then ".join(task.modalities)
    slots = [i for i, modality in enumerate(task.modalities) if modality in COLOUR_MODALITIES]
    if not slots:
        which = "both inputs are" if first_colour and second_colour else f"the {'first' if first_colour else 'second'} input is"
        return f"{task.name} takes two grey images ({order}) but {which} colour: a PET/SPECT/GFP pair needs its own --task"
    if first_colour and second_colour or (0 if first_colour else 1) in slots:
        return None
    colour = task.modalities[slots[0]]
    return f"inputs look swapped: {task.name} takes {order} ({colour} in colour), but the {'first' if first_colour else 'second'} input is the colour one"

"""What a model job is asked to train. Field names follow DIGITS' model form (reference 2.1)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class TrainConfig:
    network: str = "lenet"  # a name in kiln.networks.registry, or "custom" (network_text)
    network_text: str = ""  # a custom network: Caffe prototxt, or Python (kiln.networks.python_network)
    network_language: str = "prototxt"  # of network_text: prototxt | python
    pretrained_weights: str = ""  # a snapshot's .safetensors to start from (fine-tuning); "" = fresh
    pretrained_from: str = ""  # what those weights are, for people: "<job id> epoch <N>"
    recipe: str = "none"  # none | kiln: which recipe filled the form (kiln.training.recipe); a record only
    train_epochs: float = 30
    snapshot_interval: float = 1.0  # epochs; 0 = only the final snapshot
    val_interval: float = 1.0  # epochs; 0 = no validation
    random_seed: int | None = None
    batch_size: int | None = None  # None = the network's default
    batch_accumulation: int = 1
    solver_type: str = "SGD"  # SGD NESTEROV ADAGRAD RMSPROP ADADELTA ADAM ADAMW
    learning_rate: float = 0.01
    momentum: float = 0.9  # DIGITS hard-wired 0.9 (not for ADAGRAD/RMSPROP)
    weight_decay: float | None = None  # None = DIGITS' base_lr / 100
    rms_decay: float = 0.99
    lr_policy: str = "step"  # fixed step multistep exp inv poly sigmoid cosine
    lr_step_size: float = 33.0  # percent of training
    lr_step_gamma: float = 0.1
    lr_multistep_values: str = "50,85"
    lr_multistep_gamma: float = 0.5
    lr_exp_gamma: float = 0.95
    lr_inv_gamma: float = 0.1
    lr_inv_power: float = 0.5
    lr_poly_power: float = 3.0
    lr_sigmoid_step: float = 50.0
    lr_sigmoid_gamma: float = 0.1
    use_mean: str = "image"  # none | image | pixel
    crop_size: int | None = None
    shuffle: bool = True
    balance_classes: str = "none"  # none | weights (class-weighted loss) | sampling (balanced sampling)
    aug_flip: str = "none"  # none fliplr flipud fliplrud
    aug_quad_rot: str = "none"  # none rot90 rot180 rotall
    aug_rot: float = 0.0  # +- degrees
    aug_scale: float = 0.0  # stddev of the rescale factor
    aug_noise: float = 0.0  # stddev of gaussian noise on [0,1] pixels
    aug_contrast: float = 0.0  # factor from U[1-f, 1+f]
    aug_shift: float = 0.0  # +- fraction of the image size
    aug_shear: float = 0.0  # +- degrees
    aug_stroke: float = 0.0  # +- pixels of grey dilation / erosion
    aug_blur: float = 0.0  # max gaussian sigma, pixels
    aug_brightness: float = 0.0  # shift from U[-b, b] of 255
    aug_clean: float = 0.0  # share of images that skip the shape and photo augmentations
    aug_hsv_use: bool = False
    aug_hsv_h: float = 0.02
    aug_hsv_s: float = 0.04
    aug_hsv_v: float = 0.06
    aug_invert: float = 0.0  # probability of 255 - x per image
    early_stopping: str = "none"  # none | val_loss | val_accuracy
    early_stopping_patience: int = 5  # validations without improvement
    keep_best: bool = False  # also keep the snapshot with the best val metric
    device: str = "auto"  # auto | cpu | cuda | cuda:0,1
    precision: str = "auto"  # auto (bf16/fp16 autocast on CUDA, fp32 on CPU) | fp32 | bf16 | fp16
    channels_last: bool = True  # memory format of the network and its input (tensor cores, oneDNN)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @property
    def effective_weight_decay(self) -> float:
        return self.learning_rate / 100 if self.weight_decay is None else self.weight_decay

"""The configuration of detection and events: a camera's ``detect`` block, the server's
``detection`` (the detector model and its threads) and ``events`` (where events go).

Part of the one configuration (:mod:`vms.config` includes these models); kept apart only for
size. Coordinates in masks and zones are normalised to the picture: ``[x, y]`` with 0 at the
left/top and 1 at the right/bottom, so they hold for the main and the sub stream alike.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

# The labels of the default model (MobileNet-SSD, PASCAL VOC), in its output order after
# "background" (index 0).
VOC_LABELS = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
DEFAULT_LABELS = ("person", "car", "bus", "bicycle", "motorbike", "cat", "dog")

Point = tuple[Annotated[float, Field(ge=0, le=1)], Annotated[float, Field(ge=0, le=1)]]
Polygon = Annotated[list[Point], Field(min_length=3, max_length=100)]
Label = Annotated[str, Field(pattern=r"^[A-Za-z0-9_ -]{1,64}$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DetectStream(enum.StrEnum):
    AUTO = "auto"  # the sub stream when the camera has one, else the main stream
    MAIN = "main"
    SUB = "sub"


class MotionConfig(_Model):
    width: int = Field(320, ge=64, le=1920, title="Width motion is computed at (pixels)")
    threshold: int = Field(
        25, ge=1, le=255, title="Luma difference from the background that counts as change"
    )
    min_area: float = Field(
        0.002, gt=0, le=1, title="Smallest moving area, as a fraction of the picture"
    )
    alpha: float = Field(0.05, gt=0, le=1, title="How fast the background learns (per frame)")
    reset_fraction: float = Field(
        0.6, gt=0, le=1, title="Change over this fraction of the picture resets the background"
    )


class ZoneConfig(_Model):
    name: str = Field(title="Zone name", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    polygon: Polygon = Field(title="Polygon, normalised [x, y] points")
    labels: list[Label] = Field(default_factory=list, title="Labels it cares about (none: all)")
    loiter_s: float = Field(0, ge=0, le=86_400, title="Loitering after this long inside (0: off)")


class DetectConfig(_Model):
    """A camera's detection settings."""

    enabled: bool = Field(True, title="Detect on this camera")
    stream: DetectStream = Field(DetectStream.AUTO, title="Stream decoded for detection")
    fps: float = Field(5, gt=0, le=30, title="Frames analysed per second")
    motion: MotionConfig = Field(default_factory=MotionConfig)
    masks: list[Polygon] = Field(
        default_factory=list, title="Areas ignored by motion and objects (normalised polygons)"
    )
    labels: list[Label] = Field(
        default_factory=lambda: list(DEFAULT_LABELS), title="Labels that raise events"
    )
    min_score: dict[Label, Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=dict, title="Score threshold per label (default: detection.min_score)"
    )
    zones: list[ZoneConfig] = Field(default_factory=list, title="Zones")

    @field_validator("zones")
    @classmethod
    def _unique_zones(cls, zones: list[ZoneConfig]) -> list[ZoneConfig]:
        names = [z.name for z in zones]
        if len(set(names)) != len(names):
            raise ValueError("two zones have the same name")
        return zones


class ModelKind(enum.StrEnum):
    MOBILENET_SSD = "mobilenet_ssd"
    ONNX = "onnx"


class OnnxOutput(enum.StrEnum):
    YOLO = "yolo"  # v5 [1, N, 5+C] with objectness, or v8/v11 [1, 4+C, N]
    DETR = "detr"  # boxes [1, N, 4] (cx, cy, w, h) and logits [1, N, C], as RT-DETR exports


class OnnxModelConfig(_Model):
    path: Path = Field(title="ONNX model file")
    classes: list[Label] = Field(min_length=1, title="Class names, in the model's order")
    input_size: int = Field(640, ge=32, le=4096, title="Square input size (pixels)")
    output: OnnxOutput = Field(OnnxOutput.YOLO, title="Output layout")


class DetectionConfig(_Model):
    """The server's detector: one model shared by every camera."""

    enabled: bool = Field(True, title="Run detection at all")
    model: ModelKind = Field(ModelKind.MOBILENET_SSD, title="Detector plugin")
    model_dir: Path | None = Field(
        None,
        title="Directory holding the MobileNet-SSD files",
        description="default: $VMS_MODEL_DIR, else ~/.cache/vms/models (the set-up fills it)",
    )
    onnx: OnnxModelConfig | None = Field(None, title="The ONNX model (model: onnx)")
    threads: int = Field(2, ge=1, le=64, title="Detector threads")
    min_score: float = Field(0.5, ge=0, le=1, title="Default score threshold")


class MqttConfig(_Model):
    enabled: bool = Field(False, title="Publish to MQTT")
    host: str = Field("127.0.0.1", title="Broker host")
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = Field(None, title="Broker user")
    password: SecretStr | None = Field(None, title="Broker password")
    topic_prefix: str = Field("vms", pattern=r"^[A-Za-z0-9_/-]{1,64}$", title="Topic prefix")
    client_id: str = Field("vms", pattern=r"^[A-Za-z0-9_-]{1,64}$")


class NatsConfig(_Model):
    enabled: bool = Field(False, title="Publish to NATS JetStream")
    url: str = Field("nats://127.0.0.1:4222", pattern=r"^(nats|tls)://\S{1,253}$")
    stream: str = Field("VMS_EVENTS", pattern=r"^[A-Za-z0-9_-]{1,64}$", title="JetStream stream")
    subject_prefix: str = Field("vms", pattern=r"^[A-Za-z0-9_-]{1,64}$")


class WebhookConfig(_Model):
    url: str = Field(title="Receiver URL", pattern=r"^https?://\S{1,2000}$")
    secret: SecretStr = Field(title="HMAC-SHA256 key for X-VMS-Signature")
    timeout_s: float = Field(5, gt=0, le=60, title="Timeout of one call")
    max_tries: int = Field(8, ge=1, le=100, title="Tries before a message is given up")


class EventsConfig(_Model):
    """Where events (and camera health) go, and how long they are kept."""

    queue: int = Field(1000, ge=10, le=1_000_000, title="Messages held per sink while it is away")
    keep_days: float = Field(30, gt=0, le=3650, title="Keep events (rows, snapshots) this long")
    pre_s: float = Field(5, ge=0, le=300, title="Clip starts this long before the event")
    post_s: float = Field(5, ge=0, le=300, title="Clip ends this long after the event")
    end_after_s: float = Field(
        2, gt=0, le=300, title="An event ends this long after its object is lost"
    )
    parquet: bool = Field(True, title="Write ended events to a daily Parquet file")
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    nats: NatsConfig = Field(default_factory=NatsConfig)
    webhooks: list[WebhookConfig] = Field(default_factory=list)

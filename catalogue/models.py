"""The MorphoMass data model.

Models carry data and the constraints the database can enforce; workflows live in
``catalogue.services`` and the science in ``pipeline``. Units are in ``help_text`` so the
admin, the API schema and the exports all show them.
"""

from __future__ import annotations

import uuid

import numpy as np
from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from catalogue import registry
from catalogue.columns import ORDERABLE_COLUMNS, help_text
from catalogue.fields import Float32ArrayField
from pipeline.gz2 import N_ANSWERS
from pipeline.learning.named_models import CATALOGUE_MODEL

BANDS = "ugriz"


class Split(models.TextChoices):
    TRAIN = "train", "train"
    VAL = "val", "validation"
    TEST = "test", "test"
    NONE = "", "not used for learning"


class GalaxyStatus(models.TextChoices):
    OK = "ok", "in the learning sample"
    EXCLUDED = "excluded", "kept, outside the learning sample"
    REJECTED = "rejected", "bad input"


class Survey(models.Model):
    """One ingested survey bundle."""

    name = models.CharField(max_length=100, unique=True)
    source_path = models.CharField(max_length=500, blank=True, help_text="bundle directory it was ingested from")
    h0 = models.FloatField(default=70.0, help_text="km/s/Mpc, Hubble constant of the FlatLambdaCDM cosmology")
    om0 = models.FloatField(default=0.3, help_text="matter density of the FlatLambdaCDM cosmology")
    split_seed = models.BigIntegerField(default=0, help_text="seed of the train/val/test split")
    has_star_catalogue = models.BooleanField(
        default=False, help_text="the bundle had stars.csv: star removal uses it as the prior"
    )
    report = models.JSONField(default=dict, blank=True, help_text="last ingest report")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="private_surveys",
        help_text="set for a prediction job's sample: the survey is private to this user (and staff)",
    )
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.name

    @property
    def is_private(self) -> bool:
        return self.owner_id is not None


class Galaxy(models.Model):
    """A catalogue row: position, photometry, the M/L target, split and status."""

    survey = models.ForeignKey(Survey, on_delete=models.CASCADE, related_name="galaxies")
    objid = models.BigIntegerField(help_text=help_text("objid"))
    ra = models.FloatField(null=True, blank=True, help_text=help_text("ra"))
    dec = models.FloatField(null=True, blank=True, help_text=help_text("dec"))
    healpix = models.BigIntegerField(null=True, blank=True, db_index=True, help_text="nested HEALPix index at order 16")
    sky_x = models.FloatField(null=True, blank=True, help_text="x of the position's unit vector (cone search)")
    sky_y = models.FloatField(null=True, blank=True, help_text="y of the position's unit vector (cone search)")
    sky_z = models.FloatField(null=True, blank=True, help_text="z of the position's unit vector (cone search)")
    z = models.FloatField(null=True, blank=True, help_text=help_text("z"))
    d25_arcmin = models.FloatField(null=True, blank=True, help_text=help_text("d25_arcmin"))
    lum_dist_mpc = models.FloatField(null=True, blank=True, help_text=help_text("lum_dist_mpc"))
    lum_g = models.FloatField(null=True, blank=True, help_text=help_text("lum_g"))
    ml_g = models.FloatField(null=True, blank=True, help_text=help_text("ml_g"))
    ml_g_err = models.FloatField(null=True, blank=True, help_text=help_text("ml_g_err"))
    ml_source = models.CharField(
        max_length=10, blank=True, help_text="where the target came from: catalogue (ml_g column) or gswlc"
    )
    chi2_r = models.FloatField(null=True, blank=True, help_text=help_text("chi2_r"))
    split = models.CharField(max_length=5, choices=Split.choices, default=Split.NONE, blank=True, help_text=help_text("split"))
    status = models.CharField(
        max_length=10, choices=GalaxyStatus.choices, default=GalaxyStatus.OK, db_index=True, help_text=help_text("status")
    )
    status_reason = models.CharField(max_length=300, blank=True, help_text=help_text("status_reason"))
    extra = models.JSONField(default=dict, blank=True, help_text="catalogue columns without a field of their own")
    morphology = models.CharField(
        max_length=12, blank=True, default="", db_default="", db_index=True, help_text=help_text("morphology")
    )

    mag_u = models.FloatField(null=True, blank=True, help_text=help_text("mag_u"))
    magerr_u = models.FloatField(null=True, blank=True, help_text=help_text("magerr_u"))
    mag_g = models.FloatField(null=True, blank=True, help_text=help_text("mag_g"))
    magerr_g = models.FloatField(null=True, blank=True, help_text=help_text("magerr_g"))
    mag_r = models.FloatField(null=True, blank=True, help_text=help_text("mag_r"))
    magerr_r = models.FloatField(null=True, blank=True, help_text=help_text("magerr_r"))
    mag_i = models.FloatField(null=True, blank=True, help_text=help_text("mag_i"))
    magerr_i = models.FloatField(null=True, blank=True, help_text=help_text("magerr_i"))
    mag_z = models.FloatField(null=True, blank=True, help_text=help_text("mag_z"))
    magerr_z = models.FloatField(null=True, blank=True, help_text=help_text("magerr_z"))

    class Meta:
        verbose_name_plural = "galaxies"
        constraints = [
            models.UniqueConstraint(fields=["survey", "objid"], name="galaxy_objid_unique_per_survey"),
            models.CheckConstraint(condition=Q(split__in=[c.value for c in Split]), name="galaxy_split_known"),
            models.CheckConstraint(condition=Q(status__in=[c.value for c in GalaxyStatus]), name="galaxy_status_known"),
            models.CheckConstraint(condition=Q(ml_g_err__isnull=True) | Q(ml_g_err__gt=0), name="galaxy_ml_g_err_positive"),
            models.CheckConstraint(condition=Q(ml_g__isnull=True) | Q(ml_g__gt=0), name="galaxy_ml_g_positive"),
            models.CheckConstraint(condition=Q(dec__isnull=True) | (Q(dec__gte=-90) & Q(dec__lte=90)), name="galaxy_dec_range"),
            # A galaxy in the learning sample has everything the learning needs.
            models.CheckConstraint(
                condition=~Q(status="ok") | (Q(z__isnull=False) & Q(z__gte=0) & Q(ra__isnull=False) & Q(dec__isnull=False)),
                name="galaxy_ok_has_position_and_z",
            ),
        ]
        indexes = [
            models.Index(fields=["survey", "split"]),
            models.Index(fields=["survey", "healpix"]),
            # One per column the catalogue can be ordered by (objid has its unique constraint): a
            # sorted page is then an index walk that stops after the page, not a sort of the survey.
            *(
                models.Index(fields=["survey", name], name=f"galaxy_survey_{name}")
                for name in ORDERABLE_COLUMNS
                if name != "objid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.objid}"


class Image(models.Model):
    """A stored FITS cutout of one galaxy in one band."""

    class Status(models.TextChoices):
        OK = "ok", "ok"
        REJECTED = "rejected", "rejected"

    galaxy = models.ForeignKey(Galaxy, on_delete=models.CASCADE, related_name="images")
    band = models.CharField(max_length=1, choices=[(b, b) for b in BANDS])
    file = models.FileField(upload_to="images/", max_length=300, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True, help_text="pixels")
    width = models.PositiveIntegerField(null=True, blank=True, help_text="pixels")
    pixscale_arcsec = models.FloatField(null=True, blank=True, help_text="arcsec/pixel")
    psf_fwhm_arcsec = models.FloatField(null=True, blank=True, help_text="arcsec")
    checksum = models.CharField(max_length=64, blank=True, help_text="sha256 of the FITS file")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OK)
    status_reason = models.CharField(max_length=300, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["galaxy", "band"], name="image_one_per_band"),
            models.CheckConstraint(condition=Q(band__in=list(BANDS)), name="image_band_known"),
        ]

    def __str__(self) -> str:
        return f"{self.galaxy.objid}_{self.band}"


class GZ2Votes(models.Model):
    """Galaxy Zoo 2 weighted vote fractions and the unconditional probabilities."""

    galaxy = models.OneToOneField(Galaxy, on_delete=models.CASCADE, related_name="gz2")
    fractions = Float32ArrayField(help_text=f"{N_ANSWERS} weighted vote fractions, conditional on the task being asked")
    probabilities = Float32ArrayField(help_text=f"{N_ANSWERS} unconditional answer probabilities")

    class Meta:
        verbose_name = "GZ2 votes"
        verbose_name_plural = "GZ2 votes"


class Preprocessed(models.Model):
    """Preprocessing result of a galaxy's g-band image (paper Sect. 2.2, 3.2), or why it failed."""

    class Status(models.TextChoices):
        OK = "ok", "ok"
        FAILED = "failed", "failed"

    galaxy = models.OneToOneField(Galaxy, on_delete=models.CASCADE, related_name="preprocessed")
    run = models.ForeignKey("Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="preprocessed")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OK, db_index=True)
    error = models.CharField(max_length=300, blank=True, help_text="why preprocessing failed")
    scaling_value = models.FloatField(null=True, blank=True, help_text="dimensionless a of Eq. 1")
    scaling_fallback = models.BooleanField(
        default=False,
        db_default=False,  # rows written by COPY or SQL without the column are not flagged
        help_text="no scaling value brings this image's noise to the target level (too shallow): the closest one was used",
    )
    noise_level = models.FloatField(null=True, blank=True, help_text="mean + 2 sigma of the sigma-clipped [0, 1] image")
    n_stars_removed = models.PositiveIntegerField(default=0)
    features = models.JSONField(default=dict, blank=True, help_text="luminosity, log-image and metadata features by name")
    i_band = models.CharField(
        max_length=300,
        blank=True,
        help_text="the i and g - i channels: 'ok', why they failed, or empty (no i cutout, or the preset asks for g alone)",
    )
    i_scaling_value = models.FloatField(null=True, blank=True, help_text="dimensionless a of Eq. 1 for the i image")
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "preprocessed"
        constraints = [
            models.CheckConstraint(
                condition=Q(status="failed") | Q(scaling_value__gt=0), name="preprocessed_ok_has_scaling_value"
            ),
            models.CheckConstraint(condition=Q(status__in=["ok", "failed"]), name="preprocessed_status_known"),
        ]


class TrainedModel(models.Model):
    """A trained CNN, GBM or baseline with its artifact, hyper-parameters, curves and metrics."""

    class Kind(models.TextChoices):
        CNN = "cnn", "CNN"
        GBM = "gbm", "GBM"
        BASELINE = "baseline", "baseline"

    kind = models.CharField(max_length=10, choices=Kind.choices)
    name = models.CharField(max_length=100, help_text=f"role or model name, e.g. cnn1, {CATALOGUE_MODEL}")
    survey = models.ForeignKey(Survey, null=True, blank=True, on_delete=models.CASCADE, related_name="trained_models")
    run = models.ForeignKey("Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="trained_models")
    preset = models.CharField(max_length=20, blank=True)
    hyperparameters = models.JSONField(default=dict, blank=True, help_text="architecture, input size and training settings")
    artifact = models.FileField(upload_to="models/", max_length=300, blank=True)
    metrics = models.JSONField(default=dict, blank=True, help_text="validation metrics")
    curves = models.JSONField(default=dict, blank=True, help_text="per-epoch loss, val_loss and learning rate")
    feature_set = models.ForeignKey("FeatureSet", null=True, blank=True, on_delete=models.SET_NULL, related_name="models")
    model_set = models.ForeignKey(
        "ModelSet",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="named_models",
        help_text="the model set a named M/L model belongs to (networks can serve several sets)",
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=["cnn", "gbm", "baseline"]), name="model_kind_known"),
            models.UniqueConstraint(fields=["run", "name"], name="model_name_unique_per_run"),
        ]
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


class ModelSet(models.Model):
    """The networks and named M/L models of one training, named ``<survey>@<run>``: what travels.

    A set is made when a gbm run succeeds: its named models (with their intervals and
    support models inside the artifacts) and the networks whose features they read.
    Applying it to another survey preprocesses at its resolutions, extracts features with
    its networks and predicts with its models; nothing is trained. ``is_current`` is an
    alias staff move (one per training survey); moving it never changes stored predictions.
    """

    name = models.CharField(max_length=200, unique=True, help_text="<training survey>@<run>")
    survey = models.ForeignKey(Survey, on_delete=models.CASCADE, related_name="model_sets", help_text="training survey")
    run = models.ForeignKey("Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", help_text="gbm run")
    preset = models.CharField(max_length=20, blank=True)
    resolutions = models.JSONField(default=list, blank=True, help_text="pixels, the image sizes its networks read")
    networks = models.ManyToManyField(TrainedModel, related_name="network_of_sets", blank=True)
    feature_sets = models.JSONField(
        default=dict, blank=True, help_text="feature set name -> id on the training survey (names and dropped features)"
    )
    lineage = models.JSONField(default=dict, blank=True, help_text="runs of each stage, galaxies, training-data hash, code")
    metrics = models.JSONField(default=dict, blank=True, help_text="named model -> validation and test metrics, coverage")
    is_current = models.BooleanField(default=False, help_text="the set applied when its training survey is named")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["survey"], condition=Q(is_current=True), name="modelset_one_current_per_survey")
        ]
        ordering = ["-created", "-pk"]

    def __str__(self) -> str:
        return self.name


class FeatureSet(models.Model):
    """A named, versioned list of features of one survey, and the model that produced them."""

    name = models.CharField(max_length=100, help_text="e.g. cnn1.pool")
    version = models.PositiveIntegerField(default=1)
    survey = models.ForeignKey(Survey, null=True, blank=True, on_delete=models.CASCADE, related_name="feature_sets")
    feature_names = models.JSONField(default=list)
    dropped = models.JSONField(
        default=list, blank=True, help_text="features zero for every training galaxy, left out of training matrices"
    )
    producing_model = models.ForeignKey(
        TrainedModel, null=True, blank=True, on_delete=models.SET_NULL, related_name="produced_feature_sets"
    )
    run = models.ForeignKey("Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="feature_sets")
    symmetries = models.PositiveSmallIntegerField(
        default=1,
        help_text="each feature is the mean over this many of the square's 8 symmetries of the image "
        "(test-time augmentation; 1: the image as it is)",
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["survey", "name", "version"], name="featureset_name_version_unique")]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


class FeatureVector(models.Model):
    """One galaxy's values for one feature set, packed as float32 bytes."""

    galaxy = models.ForeignKey(Galaxy, on_delete=models.CASCADE, related_name="feature_vectors")
    feature_set = models.ForeignKey(FeatureSet, on_delete=models.CASCADE, related_name="vectors")
    values = Float32ArrayField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["galaxy", "feature_set"], name="featurevector_unique")]

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.feature_set.feature_names, np.asarray(self.values, dtype=float), strict=True))


#: The stages of the pipeline (from :mod:`catalogue.registry`) and the workflow; each is run as a :class:`Run`.
RunStage = models.TextChoices("RunStage", [(value.upper(), (value, label)) for value, label in registry.run_stage_choices()])


class Run(models.Model):
    """A unit of long work of one stage on one survey, with its inputs and a ledger of chunks.

    Progress and completion are computed from the chunk ledger (:class:`RunChunk`), never
    counted by side effects, so a redelivered chunk cannot count twice. At most one run per
    survey and stage is active (queued or running): the database enforces it.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        RUNNING = "running", "running"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"
        CANCELLED = "cancelled", "cancelled"

    ACTIVE = (Status.QUEUED, Status.RUNNING)
    TERMINAL = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    stage = models.CharField(max_length=30, choices=RunStage.choices)
    survey = models.ForeignKey(Survey, null=True, blank=True, on_delete=models.CASCADE, related_name="runs")
    preset = models.CharField(max_length=20, blank=True, help_text="named configuration of pipeline.presets")
    resolutions = models.JSONField(default=list, blank=True, help_text="pixels, image sizes the run works at")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="children")
    config = models.JSONField(default=dict, blank=True, help_text="every other input of the run")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    progress = models.FloatField(default=0.0, help_text="fraction done, 0-1")
    items_total = models.PositiveIntegerField(default=0, help_text="galaxies (or other items) the run has to handle")
    items_done = models.PositiveIntegerField(default=0)
    items_failed = models.PositiveIntegerField(default=0)
    message = models.CharField(max_length=300, blank=True)
    error = models.TextField(blank=True, help_text="why the run failed, with the traceback where there is one")
    log = models.TextField(blank=True)
    result = models.JSONField(default=dict, blank=True)
    celery_task_id = models.CharField(max_length=255, blank=True, help_text="task that runs or finishes the stage")
    started_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    #: stamped by the database (catalogue.selectors.clock): the reaper measures a queued run's wait from it
    created = models.DateTimeField(db_default=Now())
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    heartbeat = models.DateTimeField(null=True, blank=True, help_text="last sign of life from a worker")
    trained_model = models.ForeignKey(TrainedModel, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(progress__gte=0) & Q(progress__lte=1), name="run_progress_0_1"),
            models.CheckConstraint(
                condition=Q(status__in=["queued", "running", "succeeded", "failed", "cancelled"]), name="run_status_known"
            ),
            models.UniqueConstraint(
                fields=["survey", "stage"],
                condition=Q(status__in=["queued", "running"]),
                name="run_one_active_per_survey_stage",
            ),
            # One workflow or lone stage active per survey, whatever started it: a survey's
            # stages read each other's results (a workflow's own stages have it as parent).
            models.UniqueConstraint(
                fields=["survey"],
                condition=Q(status__in=["queued", "running"], parent__isnull=True),
                name="run_one_active_root_per_survey",
            ),
        ]
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.stage} #{self.pk} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    @property
    def duration_s(self) -> float | None:
        if self.started and self.finished:
            return (self.finished - self.started).total_seconds()
        return None


class RunChunk(models.Model):
    """One chunk of a run's items: the unit a worker takes, retries and reports on."""

    class State(models.TextChoices):
        QUEUED = "queued", "queued"
        RUNNING = "running", "running"
        DONE = "done", "done"
        FAILED = "failed", "failed"
        CANCELLED = "cancelled", "cancelled"

    TERMINAL = (State.DONE, State.FAILED, State.CANCELLED)

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    items = models.JSONField(default=list, help_text="ids of the galaxies (or other items) of this chunk")
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    attempts = models.PositiveIntegerField(default=0, help_text="deliveries to a worker so far")
    task_id = models.CharField(max_length=255, blank=True, help_text="Celery task id")
    worker = models.CharField(max_length=255, blank=True, help_text="hostname of the last worker that took it")
    error = models.TextField(blank=True)
    current_item = models.BigIntegerField(
        null=True, blank=True, help_text="item being processed one at a time after a redelivery"
    )
    item_crashes = models.JSONField(default=dict, blank=True, help_text="item id -> times its worker died on it")
    n_done = models.PositiveIntegerField(default=0)
    n_failed = models.PositiveIntegerField(default=0)
    failure_reasons = models.JSONField(
        default=dict,
        blank=True,
        help_text="why its failed items failed: reason -> how many (a stage that failed says the commonest)",
    )
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    heartbeat = models.DateTimeField(null=True, blank=True)
    duration_s = models.FloatField(null=True, blank=True, help_text="s, of the attempt that finished it")
    sent = models.DateTimeField(
        null=True, blank=True, help_text="when its message last reached the broker (empty: never, or the broker was down)"
    )
    sends = models.PositiveIntegerField(default=0, help_text="messages sent for it so far (the reaper sends lost ones again)")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "index"], name="runchunk_index_unique"),
            models.CheckConstraint(
                condition=Q(state__in=["queued", "running", "done", "failed", "cancelled"]), name="runchunk_state_known"
            ),
        ]
        ordering = ["run", "index"]

    def __str__(self) -> str:
        return f"run {self.run_id} chunk {self.index} ({self.state})"


class ImageStore(models.Model):
    """The log-scaled images of one survey at one resolution: one memory-mappable array.

    One store per channel: the g images that every network reads, and for galaxies with an
    i cutout (where the preset's ``image_bands`` asks for it) the i images and g - i maps.

    ``images`` is a raw float16 file of shape (capacity, resolution, resolution) in C order
    and ``galaxy_ids`` a raw int64 file of shape (capacity,) beside it; a galaxy's row is in
    :class:`StoredImage`. Rows are allocated under a row lock on this record and each is
    written by one chunk, so chunks write concurrently without overlapping.
    """

    class Channel(models.TextChoices):
        G = "g", "log-scaled g image"
        I = "i", "log-scaled i image"  # noqa: E741 - the band's name
        COLOUR = "g-i", "g - i colour map (mag, NaN without signal)"

    survey = models.ForeignKey(Survey, on_delete=models.CASCADE, related_name="image_stores")
    resolution = models.PositiveIntegerField(help_text="pixels per side")
    channel = models.CharField(max_length=8, choices=Channel.choices, default=Channel.G, help_text="what each row holds")
    images_name = models.CharField(max_length=300, help_text="storage name of the float16 image array")
    ids_name = models.CharField(max_length=300, help_text="storage name of the int64 galaxy id array")
    capacity = models.PositiveIntegerField(default=0, help_text="rows allocated in the files")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["survey", "resolution", "channel"], name="imagestore_one_per_resolution_channel")
        ]

    def __str__(self) -> str:
        return f"{self.survey} {self.resolution}px" + ("" if self.channel == self.Channel.G else f" {self.channel}")


class StoredImage(models.Model):
    """Where a galaxy's log-scaled image lives in an :class:`ImageStore`."""

    store = models.ForeignKey(ImageStore, on_delete=models.CASCADE, related_name="rows")
    galaxy = models.ForeignKey(Galaxy, on_delete=models.CASCADE, related_name="stored_images")
    row = models.PositiveIntegerField()
    written = models.BooleanField(default=False, help_text="the row holds this galaxy's current image")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["store", "galaxy"], name="storedimage_one_per_galaxy"),
            models.UniqueConstraint(fields=["store", "row"], name="storedimage_row_unique"),
        ]


class Prediction(models.Model):
    """A model's predicted M/L for one galaxy."""

    galaxy = models.ForeignKey(Galaxy, on_delete=models.CASCADE, related_name="predictions")
    model = models.ForeignKey(TrainedModel, on_delete=models.CASCADE, related_name="predictions")
    ml_pred = models.FloatField(help_text=help_text("ml_pred"))
    mstar_pred = models.FloatField(null=True, blank=True, help_text=help_text("mstar_pred"))
    ml_lo68 = models.FloatField(null=True, blank=True, help_text=help_text("ml_lo68"))
    ml_hi68 = models.FloatField(null=True, blank=True, help_text=help_text("ml_hi68"))
    ml_lo95 = models.FloatField(null=True, blank=True, help_text=help_text("ml_lo95"))
    ml_hi95 = models.FloatField(null=True, blank=True, help_text=help_text("ml_hi95"))
    mstar_lo68 = models.FloatField(null=True, blank=True, help_text=help_text("mstar_lo68"))
    mstar_hi68 = models.FloatField(null=True, blank=True, help_text=help_text("mstar_hi68"))
    mstar_lo95 = models.FloatField(null=True, blank=True, help_text=help_text("mstar_lo95"))
    mstar_hi95 = models.FloatField(null=True, blank=True, help_text=help_text("mstar_hi95"))
    out_of_support = models.BooleanField(default=False, help_text=help_text("out_of_support"))
    support_reasons = models.JSONField(default=list, blank=True, help_text=help_text("support_reasons"))
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["galaxy", "model"], name="prediction_unique_per_model"),
            models.CheckConstraint(condition=Q(ml_pred__gt=0), name="prediction_positive"),
        ]


class ExperimentResult(models.Model):
    """One row of an ablation or method comparison (paper Table 1, Table B.1, Fig. 8)."""

    experiment = models.CharField(max_length=100, help_text="e.g. table1, tableB1, fig8")
    method = models.CharField(max_length=100)
    feature_groups = models.JSONField(default=list, blank=True)
    loss = models.CharField(max_length=20, default="l1")
    split = models.CharField(max_length=5, choices=Split.choices, default=Split.TEST)
    l1 = models.FloatField(help_text="weighted L1 (dimensionless)")
    l2 = models.FloatField(null=True, blank=True, help_text="weighted L2 (dimensionless)")
    rmsle = models.FloatField(null=True, blank=True, help_text="dex")
    median_l1 = models.FloatField(null=True, blank=True)
    within_015_dex = models.FloatField(null=True, blank=True, help_text="fraction within 0.15 dex")
    n = models.PositiveIntegerField(help_text="galaxies evaluated")
    per_class = models.JSONField(default=dict, blank=True, help_text="class -> metrics")
    details = models.JSONField(
        default=dict, blank=True, help_text="what else the row reports: features used, significance tests, band set"
    )
    survey = models.ForeignKey(Survey, null=True, blank=True, on_delete=models.CASCADE)
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.SET_NULL)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(l1__gte=0), name="experiment_l1_nonnegative")]

    def __str__(self) -> str:
        return f"{self.experiment}: {self.method}"


class TapJob(models.Model):
    """An asynchronous TAP query (a UWS 1.1 job): its parameters, its phase and where its result is kept.

    The id is the job's name in its URL (/tap/async/<id>) and cannot be guessed. A job made
    by a logged-in user belongs to that user alone; anonymous jobs belong to no one and are
    reached by their URL. Past its destruction time a job and its result are deleted.
    """

    class Phase(models.TextChoices):
        PENDING = "PENDING", "PENDING"
        QUEUED = "QUEUED", "QUEUED"
        EXECUTING = "EXECUTING", "EXECUTING"
        COMPLETED = "COMPLETED", "COMPLETED"
        ERROR = "ERROR", "ERROR"
        ABORTED = "ABORTED", "ABORTED"

    ACTIVE = (Phase.QUEUED, Phase.EXECUTING)
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE)
    run_id = models.CharField(max_length=100, blank=True, help_text="the client's RUNID")
    phase = models.CharField(max_length=10, choices=Phase.choices, default=Phase.PENDING, db_index=True)
    query = models.TextField(blank=True)
    lang = models.CharField(max_length=20, default="ADQL")
    response_format = models.CharField(max_length=100, default="votable")
    maxrec = models.BigIntegerField(help_text="rows at most")
    parameters = models.JSONField(default=dict, blank=True, help_text="every parameter the job was given")
    execution_duration = models.PositiveIntegerField(help_text="s, the longest the query may run")
    destruction = models.DateTimeField(help_text="when the job and its result are deleted")
    created = models.DateTimeField(auto_now_add=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    result = models.FileField(upload_to="tap/", max_length=300, blank=True)
    uploads = models.JSONField(
        default=dict, blank=True, help_text="TAP_UPLOAD table name -> its file in the media storage, until the job goes"
    )
    rows = models.BigIntegerField(null=True, blank=True, help_text="rows in the result")
    overflow = models.BooleanField(default=False, help_text="the result was cut at MAXREC")
    base_url = models.CharField(
        max_length=300, blank=True, help_text="the service's address as the job was made (its result's DataLink)"
    )
    error = models.TextField(blank=True)
    celery_task_id = models.CharField(max_length=255, blank=True)
    backend_pid = models.IntegerField(null=True, blank=True, help_text="PostgreSQL backend running the query (ABORT)")

    class Meta:
        ordering = ["-created"]
        constraints = [models.CheckConstraint(condition=Q(maxrec__gte=0), name="tapjob_maxrec_nonnegative")]

    def __str__(self) -> str:
        return f"TAP job {self.id} ({self.phase})"


class PredictionJob(models.Model):
    """A signed-in user's sample predicted by a model set: its uploads, its private survey, its phase.

    The phases are UWS's. QUEUED until a worker unpacks the sample; EXECUTING while it is
    ingested into the job's private survey (:attr:`survey`, owned by the user) and while the
    apply stages run on it as one workflow (:attr:`workflow`); then COMPLETED, ERROR or ABORTED.
    Nothing of a job appears in the public catalogue; past :attr:`destruction` it is deleted
    with its survey and files.
    """

    class Phase(models.TextChoices):
        QUEUED = "QUEUED", "QUEUED"
        EXECUTING = "EXECUTING", "EXECUTING"
        COMPLETED = "COMPLETED", "COMPLETED"
        ERROR = "ERROR", "ERROR"
        ABORTED = "ABORTED", "ABORTED"

    ACTIVE = (Phase.QUEUED, Phase.EXECUTING)
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="prediction_jobs")
    model_set = models.ForeignKey(ModelSet, null=True, on_delete=models.SET_NULL, related_name="+")
    phase = models.CharField(max_length=10, choices=Phase.choices, default=Phase.QUEUED, db_index=True)
    message = models.CharField(max_length=300, blank=True, help_text="what the job is doing now")
    uploads = models.JSONField(default=list, blank=True, help_text="storage names of the uploaded files, in order")
    table_name = models.CharField(max_length=300, blank=True, help_text="storage name of the uploaded table, if any")
    upload_bytes = models.BigIntegerField(default=0, help_text="bytes uploaded")
    unpacked_bytes = models.BigIntegerField(default=0, help_text="bytes of the files the archive holds")
    n_rows = models.PositiveIntegerField(default=0, help_text="galaxies in the table")
    survey = models.OneToOneField(Survey, null=True, blank=True, on_delete=models.SET_NULL, related_name="prediction_job")
    workflow = models.ForeignKey("Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    faults = models.JSONField(
        default=list, blank=True, help_text="per archive entry, table row or galaxy: {kind, reason, objid, file}"
    )
    error = models.TextField(blank=True, help_text="why the job failed as a whole")
    celery_task_id = models.CharField(max_length=255, blank=True)
    sent = models.DateTimeField(null=True, blank=True, help_text="when its preparation was last sent to the workers")
    heartbeat = models.DateTimeField(null=True, blank=True, help_text="last sign of life of the worker preparing it")
    created = models.DateTimeField(db_default=Now())  # the database's clock, as the reaper's
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    destruction = models.DateTimeField(help_text="when the job, its galaxies and its files are deleted")

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"prediction job {self.id} ({self.phase})"

    @property
    def storage_prefix(self) -> str:
        """Where the job's own files live in the media storage."""
        return f"jobs/{self.id}/"


class CatalogueChoice(models.Model):
    """A galaxy's catalogue M/L as stored when its survey's choices were last refreshed: the prediction
    of the model :func:`catalogue.selectors.catalogue_ml.choose_model` picks, copied, so that a cone search
    reads one row per galaxy instead of joining each candidate model's prediction and the galaxy's inputs.

    Read only while current (:mod:`catalogue.services.catalogue_choices`); written only by its refresh.
    """

    galaxy = models.OneToOneField(Galaxy, on_delete=models.CASCADE, primary_key=True, related_name="catalogue_choice")
    model = models.ForeignKey(TrainedModel, on_delete=models.CASCADE, related_name="+")
    ml = models.FloatField(help_text=help_text("ml_pred"))
    ml_lo68 = models.FloatField(null=True, help_text=help_text("ml_lo68"))
    ml_hi68 = models.FloatField(null=True, help_text=help_text("ml_hi68"))
    mstar = models.FloatField(null=True, help_text=help_text("mstar_pred"))
    out_of_support = models.BooleanField(help_text=help_text("out_of_support"))


class CatalogueChoiceSet(models.Model):
    """Which candidates (model ids, best first) a survey's :class:`CatalogueChoice` rows were chosen from, and when."""

    survey = models.OneToOneField(Survey, on_delete=models.CASCADE, primary_key=True, related_name="catalogue_choices")
    candidates = models.TextField(help_text="the candidate models as id:name, best-validated first")
    refreshed = models.DateTimeField(db_default=Now())


class CatalogueChange(models.Model):
    """A statement that changed a survey's predictions or galaxies' inputs since its choices were refreshed.

    Written by database triggers (migration 0024) on every insert, update or delete of predictions and
    preprocessing rows and on changes of a galaxy's i-band magnitude or survey, whoever writes them; a
    refresh deletes those it has seen. ``survey_id`` is a plain number: a survey's deletion writes some
    as it deletes its galaxies' predictions, and the next sweep removes them.
    """

    survey_id = models.BigIntegerField(db_index=True)
    noted = models.DateTimeField(db_default=Now())

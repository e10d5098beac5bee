"""Files go with their records: a deleted survey leaves no cutout or model file behind.

Connected in ``CatalogueConfig.ready``: ``pre_delete`` of :class:`~catalogue.models.Survey` gathers its
cutouts' names in one query (a handler on each :class:`~catalogue.models.Image` would make Django load
every image of a 700,000-galaxy survey to delete it, instead of one DELETE), ``post_delete`` of
:class:`~catalogue.models.TrainedModel` its .keras or pickled file. The files are deleted once the
deletion has committed (a rolled-back deletion keeps them), on any storage: on a bucket, nothing else
would ever find them again.
"""

from __future__ import annotations

from django.db import transaction

from catalogue.models import Image, Survey, TrainedModel
from catalogue.services import object_store


def delete_survey_cutouts_after_commit(sender, instance: Survey, **_kwargs) -> None:  # noqa: ARG001 - signal signature
    """Delete the survey's FITS cutouts once the deletion of the survey has committed."""
    names = list(Image.objects.filter(galaxy__survey=instance).exclude(file="").values_list("file", flat=True))
    if names:
        transaction.on_commit(lambda: object_store.delete_many(names))


def delete_artifact_after_commit(sender, instance: TrainedModel, **_kwargs) -> None:  # noqa: ARG001 - signal signature
    """Delete the model's file once the deletion of the model has committed."""
    if instance.artifact:
        transaction.on_commit(lambda: object_store.delete_many([instance.artifact.name], instance.artifact.storage))

from django.apps import AppConfig
from django.db.models.signals import post_delete


class CatalogueConfig(AppConfig):
    name = "catalogue"
    verbose_name = "MorphoMass catalogue"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from catalogue.models import ImageStore
        from catalogue.services.image_store import delete_store_files

        post_delete.connect(delete_store_files, sender=ImageStore, dispatch_uid="imagestore-files")

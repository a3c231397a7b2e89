from django.apps import AppConfig


class LicensingConfig(AppConfig):
    name = "licensing"
    verbose_name = "Licensing and audit"

    def ready(self) -> None:
        # In every process (web, workers, commands): their writes must announce themselves to
        # the download path's memory, which would otherwise keep answers for a minute.
        from licensing import read_cache  # noqa: F401

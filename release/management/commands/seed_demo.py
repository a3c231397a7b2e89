import hashlib
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from licensing import access
from licensing.keys import signing_key_ensure
from licensing.models import License
from release import services
from release.models import Model
from release.sample_weights import sample_model_files, sample_tokenizer_files
from release.storage import s3_client

REPO_ORG, REPO_NAME, VERSION = "acme", "tiny-llama", "v1.0"
CARD = """# Tiny Llama (demo)

A four-layer decoder made of random numbers, to show Weightgate's staged release:
the **base** weights and the **tokenizer** start proprietary; unlocks move them to gated, then open.
"""


LICENSE_TEXT = """TINY LLAMA COMMUNITY LICENSE, version 1.0 (demo)

You may use, reproduce and modify the Tiny Llama materials, and build on them, provided that:
1. you keep this notice and say "Built with Tiny Llama" where you ship something built on them;
2. if your products had more than 700 million monthly active users on the release date, you ask
   us for a separate license first;
3. you follow the acceptable use policy.
The materials come as they are, without warranty of any kind.
"""


class Command(BaseCommand):
    help = "Seed a demo model (real safetensors shards in staging, proprietary) and an admin."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--username", default="admin")
        parser.add_argument(
            "--password-file", default=str(settings.BASE_DIR / ".local" / "demo-admin-password")
        )

    def handle(self, *args: Any, username: str, password_file: str, **options: Any) -> None:
        password = self._admin(username, Path(password_file))
        existing = Model.objects.filter(org=REPO_ORG, name=REPO_NAME).first()
        if existing is not None and not hasattr(existing, "gate_policy"):
            self._gate(existing)  # seeded before licensing existed
        if existing is not None:
            self.stdout.write(f"demo model {REPO_ORG}/{REPO_NAME} already seeded")
        else:
            self._model()
        self.stdout.write(
            self.style.SUCCESS(
                "\nWeightgate demo\n"
                f"  site:  {settings.SITE_URL}/admin/   (login: {username} / {password})\n"
                f"  API:   {settings.SITE_URL}/api/v1/models/\n"
                f"  docs:  {settings.SITE_URL}/api/docs/\n"
            )
        )

    def _admin(self, username: str, password_file: Path) -> str:
        """The demo admin's password is made once and kept, 0600, next to the local services."""
        if password_file.exists():
            password = password_file.read_text().strip()
        else:
            password = secrets.token_urlsafe(12)
            password_file.parent.mkdir(parents=True, exist_ok=True)
            password_file.touch(mode=0o600)
            password_file.write_text(password)
        user_model = get_user_model()
        user, _ = user_model.objects.get_or_create(
            username=username, defaults={"email": f"{username}@example.com"}
        )
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        return password

    @transaction.atomic
    def _model(self) -> None:
        # The demo signs with a key made here; production keys come from `signing_key rotate`.
        signing_key_ensure(purpose="models")
        model = services.model_create(
            actor=None, org=REPO_ORG, name=REPO_NAME, title="Tiny Llama (demo)", card=CARD
        )
        version = services.version_create(actor=None, model=model, name=VERSION)
        client = s3_client()
        for artifact_name, files in (
            ("base", sample_model_files()),
            ("tokenizer", sample_tokenizer_files()),
        ):
            artifact = services.artifact_create(actor=None, version=version, name=artifact_name)
            for path, body in files.items():
                key = f"demo/{REPO_ORG}/{REPO_NAME}/{VERSION}/{path}"
                client.put_object(Bucket=settings.S3_BUCKET_STAGING, Key=key, Body=body)
                services.file_add(
                    artifact=artifact,
                    path=path,
                    size=len(body),
                    sha256=hashlib.sha256(body).hexdigest(),
                    storage_key=key,
                )
        sealed = services.version_seal(actor=None, version=version)
        self.stdout.write(f"seeded {sealed} (commit {sealed.commit}), every artifact proprietary")
        self._gate(model)

    @transaction.atomic
    def _gate(self, model: Model) -> None:
        """A published license and a manual gate with a form, ready for when an unlock makes
        an artifact gated."""
        admin = get_user_model().objects.get(username="admin")
        signing_key_ensure(purpose="grants")
        license = License.objects.create(
            slug="tiny-llama-community",
            version="1.0",
            title="Tiny Llama Community License",
            text=LICENSE_TEXT,
            commercial_use=True,
            mau_cap=700_000_000,
            attribution_required=True,
            acceptable_use_url="https://example.com/aup",
        )
        license = access.license_publish(actor=admin, license=license)
        access.gate_policy_set(
            actor=admin,
            model=model,
            license=license,
            approval_mode="manual",
            form_fields=[
                {"name": "full_name", "label": "Full name", "type": "text", "required": True},
                {"name": "affiliation", "label": "Affiliation", "type": "text", "required": True},
                {"name": "country", "label": "Country", "type": "country", "required": True},
                {
                    "name": "use",
                    "label": "Intended use",
                    "type": "select",
                    "required": True,
                    "options": ["research", "commercial", "education"],
                },
                {
                    "name": "accept_aup",
                    "label": "I accept the acceptable use policy",
                    "type": "checkbox",
                    "required": True,
                },
            ],
        )

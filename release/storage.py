"""Object storage through boto3, configured from settings. One client per process: boto3 clients
are thread-safe and costly to build."""

import json
from functools import cache
from typing import TYPE_CHECKING, Literal, cast

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from django.conf import settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


AddressingStyle = Literal["path", "virtual", "auto"]


@cache
def s3_client() -> "S3Client":
    return boto3.client(
        "s3",
        endpoint_url=settings.S3_ENDPOINT_URL,
        region_name=settings.S3_REGION,
        aws_access_key_id=settings.S3_ACCESS_KEY_ID,
        aws_secret_access_key=settings.S3_SECRET_ACCESS_KEY,
        config=Config(
            signature_version="s3v4",
            s3={
                "addressing_style": cast(AddressingStyle, settings.S3_ADDRESSING_STYLE),
                # Our uploads carry their own x-amz-checksum-sha256 (a signed header the store
                # verifies), so botocore need not hash every body a second time to sign it.
                "payload_signing_enabled": False,
            },
            retries={"max_attempts": 5, "mode": "standard"},
        ),
    )


def public_read_policy(bucket: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "PublicReadForOpenArtifacts",
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": ["s3:GetObject"],
                    "Resource": [f"arn:aws:s3:::{bucket}/*"],
                }
            ],
        }
    )


def buckets_ensure() -> list[str]:
    """Create the staging, gated and public buckets if missing; make only the public one
    anonymously readable. Returns the names of the buckets it created."""
    client = s3_client()
    created = []
    for bucket in (settings.S3_BUCKET_STAGING, settings.S3_BUCKET_GATED, settings.S3_BUCKET_PUBLIC):
        try:
            client.head_bucket(Bucket=bucket)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") not in {"404", "NoSuchBucket"}:
                raise
            client.create_bucket(Bucket=bucket)
            created.append(bucket)
    client.put_bucket_policy(
        Bucket=settings.S3_BUCKET_PUBLIC, Policy=public_read_policy(settings.S3_BUCKET_PUBLIC)
    )
    return created

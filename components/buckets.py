"""S3 buckets on Ceph RGW as native pulumi_aws resources, one aws.Provider per RGW user.

The provider points at RGW with every setting non-AWS S3 needs:
* path-style addressing (bucket names contain dots; https://github.com/pulumi/pulumi-aws/issues/6388);
* all skip-validation flags, or the provider hangs probing STS/IMDS
  (https://github.com/pulumi/pulumi/issues/6333);
* region = the zonegroup api_name (``dpe``) so CreateBucket's LocationConstraint is accepted;
* AWS SDK Go v2 sends CRC checksums by default, which RGW rejects
  (https://github.com/hashicorp/terraform/issues/34086): the provider process must run with
  AWS_REQUEST_CHECKSUM_CALCULATION / AWS_RESPONSE_CHECKSUM_VALIDATION = when_required.  The
  provider has no setting for it; it inherits the CLI's environment, so the program refuses
  to run without it (``require_checksum_env``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import pulumi
import pulumi_aws as aws

from components.config import ConfigError

CHECKSUM_ENV = {
    "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
    "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
}


def require_checksum_env(environ: Mapping[str, str] | None = None) -> None:
    environ = os.environ if environ is None else environ
    for var, want in CHECKSUM_ENV.items():
        if environ.get(var, "").lower() != want:
            current = repr(environ[var]) if var in environ else "unset"
            raise ConfigError(
                f"environment {var}",
                f"is {current}, but Ceph RGW needs {want}",
                f"export {var}={want} before running pulumi (see README)",
                prefix="",
            )


def provider_settings(endpoint: str, region: str) -> dict:
    """The aws.Provider arguments for RGW (also used verbatim by the RGW integration test)."""
    return {
        "region": region,
        "endpoints": [aws.ProviderEndpointArgs(s3=endpoint)],
        "s3_use_path_style": True,
        "skip_credentials_validation": True,
        "skip_metadata_api_check": True,
        "skip_region_validation": True,
        "skip_requesting_account_id": True,
    }


@dataclass(frozen=True)
class RgwBucketArgs:
    bucket: str
    endpoint: str
    region: str
    access_key: pulumi.Input[str]
    secret_key: pulumi.Input[str]
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)


class RgwBucket(pulumi.ComponentResource):
    """A bucket owned by one RGW user, through that user's provider."""

    bucket: aws.s3.Bucket
    provider: aws.Provider

    def __init__(self, name: str, args: RgwBucketArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("dpe:airflow:RgwBucket", name, None, opts)
        self.provider = aws.Provider(
            f"{name}-rgw",
            access_key=pulumi.Output.secret(args.access_key),
            secret_key=pulumi.Output.secret(args.secret_key),
            **provider_settings(args.endpoint, args.region),
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on)),
        )
        self.bucket = aws.s3.Bucket(
            f"{name}-bucket",
            bucket=args.bucket,
            force_destroy=False,
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=self.provider,
                protect=True,
                # even if unprotected and removed, the data stays in RGW
                retain_on_delete=True,
                depends_on=list(args.depends_on),
            ),
        )
        self.register_outputs({"bucket": self.bucket.bucket})

"""The CrossGuard policy pack, as `pulumi preview --policy-pack policy` runs it.

The Pulumi CLI runs this folder as a script, so the project root is put on the path for the
`policy` and `components` packages the rules share with the program (GPU names, the placeholder
pattern, Sophia's namespaces). `PolicyPack` serves the analyzer until the engine is done with it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import EnforcementLevel, PolicyPack

from policy.pack import PACK_NAME, policies

PolicyPack(name=PACK_NAME, policies=policies(), enforcement_level=EnforcementLevel.MANDATORY)

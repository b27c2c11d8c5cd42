"""Package discovery for the three source trees (metadata lives in pyproject.toml).

``plugins/`` and ``registry/`` are mapped into the ``adapterhub`` namespace so that no
top-level package literally named ``plugins`` or ``registry`` is installed. Every
sub-package is found automatically, so adding a plugin folder needs no edit here.
"""

from setuptools import find_namespace_packages, setup

TREES = {"adapterhub": "adapterhub", "adapterhub.plugins": "plugins", "adapterhub.registry": "registry"}

packages: list[str] = []
package_dir: dict[str, str] = {}
for pkg, folder in TREES.items():
    packages.append(pkg)
    package_dir[pkg] = folder
    # Namespace discovery also lists data-only folders (the hub's templates/ and static/),
    # so setuptools installs their files without warning that they are missing packages.
    for sub in find_namespace_packages(folder, exclude=["*__pycache__*"]):
        packages.append(f"{pkg}.{sub}")
        package_dir[f"{pkg}.{sub}"] = f"{folder}/{sub.replace('.', '/')}"

setup(packages=packages, package_dir=package_dir)

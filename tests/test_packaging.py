# -*- test-case-name: tests.test_packaging -*-
"""
Tests for how bluegreen is packaged: the C{twistd} plugin, the console
script, and the wheel.
"""

from __future__ import annotations

import glob
import importlib.metadata
import importlib.util
import os
import shutil
import sys
import zipfile

from twisted.application.service import IServiceMaker
from twisted.internet.defer import Deferred
from twisted.internet.utils import getProcessOutputAndValue
from twisted.plugin import getPlugins
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

import bluegreen
from bluegreen.cli import main as cli
from bluegreen.service import tap

#: The repository: the directory holding setup.cfg.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class PluginTests(SynchronousTestCase):
    """
    C{twistd} finds the C{bluegreen} plugin.
    """

    def plugins(self) -> list[IServiceMaker]:
        """
        @return: The installed service makers named C{bluegreen}.
        """
        return [p for p in getPlugins(IServiceMaker) if p.tapname == "bluegreen"]

    def test_one(self) -> None:
        """
        Exactly one C{bluegreen} plugin is found.
        """
        self.assertEqual(len(self.plugins()), 1)

    def test_options(self) -> None:
        """
        The plugin's options are L{bluegreen.service.tap.Options}.
        """
        [plugin] = self.plugins()
        self.assertIs(plugin.options, tap.Options)

    def test_makeService(self) -> None:
        """
        The plugin builds its service with L{bluegreen.service.tap.makeService}.
        """
        [plugin] = self.plugins()
        self.assertIs(plugin.makeService, tap.makeService)

    def test_description(self) -> None:
        """
        The plugin describes itself for C{twistd --help}.
        """
        [plugin] = self.plugins()
        self.assertIn("blue-green", plugin.description.lower())


class MetadataTests(SynchronousTestCase):
    """
    The installed distribution's metadata.
    """

    def test_version(self) -> None:
        """
        The installed version is the package's.
        """
        self.assertEqual(importlib.metadata.version("bluegreen"), bluegreen.__version__)

    def test_consoleScript(self) -> None:
        """
        The C{bluegreen} console script runs L{bluegreen.cli.main.main}.
        """
        [entry] = importlib.metadata.entry_points(
            group="console_scripts", name="bluegreen"
        )
        self.assertEqual(entry.value, "bluegreen.cli.main:main")
        self.assertIs(entry.load(), cli.main)


def copySource(destination: str) -> None:
    """
    Copy what a build of bluegreen reads (the files at the top of the
    repository, and the C{bluegreen} and C{twisted} packages) to
    C{destination}, so that building does not write into the repository.

    @param destination: A directory that does not exist yet.
    """
    os.makedirs(destination)
    for name in os.listdir(ROOT):
        path = os.path.join(ROOT, name)
        if os.path.isfile(path) and not name.startswith("_trial_temp"):
            shutil.copy2(path, destination)
    for package in ("bluegreen", "twisted"):
        shutil.copytree(
            os.path.join(ROOT, package),
            os.path.join(destination, package),
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )


class WheelTests(TestCase):
    """
    The wheel installs the plugin into the C{twisted.plugins} namespace
    without claiming the C{twisted} package.
    """

    async def test_contents(self) -> None:
        """
        The wheel holds the plugin module, every bluegreen module and the
        dashboard page, but no
        C{twisted/__init__.py}, C{twisted/plugins/__init__.py} or plugin
        cache; its entry points name the console script.  Building it
        warns of nothing in how the package is declared (the sample app's
        pictures once gave a long setuptools deprecation warning).
        """
        for module in ("setuptools", "wheel"):
            if importlib.util.find_spec(module) is None:
                raise SkipTest(
                    f"building a wheel needs {module} in this environment "
                    f"(pip install setuptools wheel)"
                )
        work = os.path.abspath(self.mktemp())
        source = os.path.join(work, "source")
        output = os.path.join(work, "wheels")
        copySource(source)
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": work,
            "PIP_CONFIG_FILE": os.devnull,
            "PIP_NO_CACHE_DIR": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        }
        d: Deferred[tuple[bytes, bytes, int]] = getProcessOutputAndValue(
            sys.executable,
            [
                "-m",
                "pip",
                "wheel",
                # Verbose: the build's own warnings are shown.
                "-v",
                "--no-deps",
                "--no-build-isolation",
                "--no-index",
                "-w",
                output,
                source,
            ],
            env=env,
            path=work,
        )
        out, err, code = await d
        built = (out + err).decode("utf-8", "replace")
        self.assertEqual(code, 0, built)
        self.assertNotIn("SetuptoolsDeprecationWarning", built)
        self.assertNotIn("bluegreen.demo.meow.images", built)
        [wheel] = glob.glob(os.path.join(output, "bluegreen-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            names = set(archive.namelist())
            [entryPoints] = [
                n for n in names if n.endswith(".dist-info/entry_points.txt")
            ]
            entryPointsText = archive.read(entryPoints).decode("utf-8")
        self.assertIn("twisted/plugins/bluegreen_plugin.py", names)
        self.assertIn("bluegreen/admin/dashboard.html", names)
        self.assertNotIn("twisted/plugins/__init__.py", names)
        self.assertNotIn("twisted/__init__.py", names)
        self.assertNotIn("twisted/plugins/dropin.cache", names)
        modules = {
            os.path.relpath(os.path.join(directory, name), ROOT)
            for directory, _, files in os.walk(os.path.join(ROOT, "bluegreen"))
            for name in files
            if name.endswith((".py", ".html", ".txt", ".png"))
        }
        self.assertEqual(modules - names, set())
        self.assertIn("bluegreen/demo/meow/facts.txt", names)
        self.assertIn("bluegreen/demo/meow/images/cat-1-ginger.png", names)
        self.assertIn("bluegreen = bluegreen.cli.main:main", entryPointsText)

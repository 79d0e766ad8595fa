"""Build hook: the course ships inside the package, so a wheel runs away from the repository.

``python -m build`` (sdist, then a wheel from it) copies the chapters' notebooks, their parameter
files and their recorded reference runs from ``notebooks/`` into ``medcl_lite/course/`` of the
built package (the sdist carries ``notebooks/``: MANIFEST.in). Everything else is in
pyproject.toml. At run time ``medcl_lite.course_dir()`` finds the course: the repository's
``notebooks/`` in a clone or an editable install, else the packaged copy.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

COURSE = ("*.ipynb", "params/*/*.yaml", "params/*/*.md", "reference/*/*")


class BuildPyWithCourse(build_py):
    def run(self):
        super().run()
        source = Path(__file__).resolve().parent / "notebooks"
        target = Path(self.build_lib) / "medcl_lite" / "course"
        for pattern in COURSE:
            for path in sorted(source.glob(pattern)):
                if path.is_file():
                    destination = target / path.relative_to(source)
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, destination)


setup(cmdclass={"build_py": BuildPyWithCourse})

"Package metadata comes from settings.ini (nbdev's single source); this file only maps it onto setuptools."
from configparser import ConfigParser
from pathlib import Path
import setuptools

cfg = ConfigParser(delimiters=['='])
cfg.read(Path(__file__).parent/'settings.ini', encoding='utf-8')
c = cfg['DEFAULT']
licenses = {'apache2': ('Apache Software License 2.0', 'OSI Approved :: Apache Software License')}
lic = licenses[c['license']]
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable']
py_versions = '3.10 3.11 3.12 3.13'.split()
min_python = c['min_python']
readme = Path(__file__).parent/'README.md'
console = [s.strip() for s in c.get('console_scripts', '').split() if s.strip()]

setuptools.setup(
    name=c['lib_name'], version=c['version'], description=c['description'],
    license=lic[0], author=c['author'], author_email=c['author_email'], url=c['git_url'],
    packages=setuptools.find_packages(include=[c['lib_path'], c['lib_path'] + '.*']),
    include_package_data=True, zip_safe=False,
    install_requires=c['requirements'].split(),
    extras_require={'dev': c['dev_requirements'].split(), 'formats': c.get('formats_requirements', '').split()},
    python_requires='>=' + min_python,
    long_description=readme.read_text(encoding='utf-8') if readme.exists() else '',
    long_description_content_type='text/markdown',
    keywords=c['keywords'],
    classifiers=['Development Status :: ' + statuses[int(c['status'])], 'Intended Audience :: ' + c['audience'],
                 'License :: ' + lic[1], 'Natural Language :: ' + c['language']] +
                ['Programming Language :: Python :: ' + v for v in py_versions[py_versions.index(min_python):]],
    entry_points={'console_scripts': console, 'nbdev': [f"{c['lib_path']}={c['lib_path']}._modidx:d"]},
)

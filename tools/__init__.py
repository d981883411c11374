"Development tools of the synthsae checkout (not part of the package): the docs builder and the benchmark harnesses"

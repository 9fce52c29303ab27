# The kind harness's fixtures image (hack/kind-e2e.sh builds it; its build context is a folder the
# harness fills): the Weir image plus the example models and the relay. Built FROM the Weir
# image that was just built locally, so nothing is pulled and the interpreter is the same.
#
#   python -m http.server 8000 --directory /e2e/models   # the model files, over HTTP
#   python /e2e/relay.py --upstream http://iris.NS.svc   # see relay.py
ARG WEIR_IMAGE=weir:kind-e2e
FROM ${WEIR_IMAGE}
COPY models/ /e2e/models/
COPY relay.py /e2e/relay.py
ENTRYPOINT ["/opt/weir/bin/python"]
CMD ["-m", "http.server", "8000", "--directory", "/e2e/models"]

"""The reviews service: product reviews and ratings, in Python with grpcio.

An app of one's own, meshed by Meshwork from its contract: `mesh up` starts
it and tells it where it stands through environment variables (MESH_LISTEN,
the address to serve on; MESH_OUTBOUND, its own sidecar's outbound port, for
every call to a peer; MESH_DATA_DIR, a folder for its data). It checks with
the catalog, through its sidecar, that a reviewed product exists, and
forwards trace context with OpenTelemetry's gRPC instrumentation, so its
spans sit in the same trace as the Rust services'.
"""

import logging
import os
import signal
import sqlite3
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc
import grpc_tools
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_tools import protoc
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.grpc import GrpcInstrumentorClient, GrpcInstrumentorServer
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

HERE = Path(__file__).resolve().parent
PROTO_DIRS = [HERE.parent / "proto", HERE.parents[2] / "proto"]
log = logging.getLogger("reviews")


def generate_stubs(out: Path):
    """Generates the Python stubs of reviews.proto and of the catalog's
    contract (for the call to catalog) into `out`, so nothing generated is
    kept in the repository."""
    out.mkdir(parents=True, exist_ok=True)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    protos = ["reviews/v1/reviews.proto", "shop/catalog/v1/catalog.proto", "shop/common/v1/money.proto"]
    args = ["protoc", f"-I{well_known}"] + [f"-I{d}" for d in PROTO_DIRS]
    args += [f"--python_out={out}", f"--grpc_python_out={out}"] + protos
    if protoc.main(args) != 0:
        sys.exit(f"reviews: cannot generate stubs from {protos}")
    sys.path.insert(0, str(out))


def init_tracing(service: str) -> TracerProvider:
    """OTLP/gRPC to OTEL_EXPORTER_OTLP_ENDPOINT (default 127.0.0.1:4317), as
    the Rust services do; W3C traceparent in and out through the gRPC
    instrumentation."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    # Without a collector listening, spans are dropped quietly, as the Rust
    # workloads drop theirs, instead of an error line every few seconds.
    logging.getLogger("opentelemetry.exporter.otlp.proto.grpc.exporter").setLevel(logging.CRITICAL)
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    trace.set_tracer_provider(provider)
    GrpcInstrumentorServer().instrument()
    GrpcInstrumentorClient().instrument()
    return provider


class Store:
    """Reviews in SQLite, shared by the service's replicas: every write takes
    the write lock up front and waits for it, so replicas serialize."""

    def __init__(self, path: Path):
        self.path = path
        self.local = threading.local()
        with self.connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS reviews (review_id TEXT PRIMARY KEY, product_id TEXT NOT NULL,"
                " author TEXT NOT NULL, stars INTEGER NOT NULL, text TEXT NOT NULL,"
                " seq INTEGER NOT NULL)"
            )

    def connect(self) -> sqlite3.Connection:
        db = getattr(self.local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=5, isolation_level=None)
            self.local.db = db
        return db

    def add(self, r) -> tuple:
        db = self.connect()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT OR IGNORE INTO reviews VALUES (?, ?, ?, ?, ?,"
                " (SELECT COALESCE(MAX(seq), 0) + 1 FROM reviews))",
                (r.review_id, r.product_id, r.author, r.stars, r.text),
            )
            row = db.execute(
                "SELECT review_id, product_id, author, stars, text FROM reviews WHERE review_id = ?",
                (r.review_id,),
            ).fetchone()
            db.execute("COMMIT")
            return row
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def of_product(self, product_id: str) -> list:
        return self.connect().execute(
            "SELECT review_id, product_id, author, stars, text FROM reviews WHERE product_id = ? ORDER BY seq DESC",
            (product_id,),
        ).fetchall()


def make_servicer(pb, pb_grpc, catalog_pb, catalog):
    class ReviewService(pb_grpc.ReviewServiceServicer):
        def __init__(self, store: Store):
            self.store = store

        def AddReview(self, request, context):
            if not request.review_id:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "review_id is required")
            if not 1 <= request.stars <= 5:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"stars must be from 1 to 5, got {request.stars}")
            try:
                # Through this service's own sidecar, as every call to a peer.
                catalog.GetProduct(catalog_pb.GetProductRequest(product_id=request.product_id), timeout=2)
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.NOT_FOUND:
                    context.abort(grpc.StatusCode.NOT_FOUND, f"no product '{request.product_id}'")
                context.abort(grpc.StatusCode.UNAVAILABLE, f"cannot check the product with the catalog: {e.details()}")
            return review_of(pb, self.store.add(request))

        def ListReviews(self, request, context):
            return pb.ListReviewsResponse(reviews=[review_of(pb, r) for r in self.store.of_product(request.product_id)])

        def GetRating(self, request, context):
            stars = [r[3] for r in self.store.of_product(request.product_id)]
            average = sum(stars) / len(stars) if stars else 0.0
            return pb.Rating(product_id=request.product_id, average=average, count=len(stars))

    return ReviewService


def review_of(pb, row):
    review_id, product_id, author, stars, text = row
    return pb.Review(review_id=review_id, product_id=product_id, author=author, stars=stars, text=text)


def main():
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stdout)
    name = os.environ.get("MESH_SERVICE", "reviews")
    listen = os.environ.get("MESH_LISTEN", "127.0.0.1:7105")
    outbound = os.environ.get("MESH_OUTBOUND", "127.0.0.1:7305")
    data = Path(os.environ.get("MESH_DATA_DIR", HERE / "data"))
    data.mkdir(parents=True, exist_ok=True)
    generate_stubs(data / f"{name}-stubs")
    import reviews.v1.reviews_pb2 as pb
    import reviews.v1.reviews_pb2_grpc as pb_grpc
    import shop.catalog.v1.catalog_pb2 as catalog_pb
    import shop.catalog.v1.catalog_pb2_grpc as catalog_grpc

    provider = init_tracing(name)
    catalog = catalog_grpc.CatalogServiceStub(grpc.insecure_channel(outbound))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    servicer = make_servicer(pb, pb_grpc, catalog_pb, catalog)(Store(data / f"{name}.db"))
    pb_grpc.add_ReviewServiceServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    service_name = pb.DESCRIPTOR.services_by_name["ReviewService"].full_name
    reflection.enable_server_reflection([service_name, reflection.SERVICE_NAME], server)
    if server.add_insecure_port(listen) == 0:
        sys.exit(f"reviews: cannot listen on {listen}")
    server.start()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    log.info("serving %s on %s, calling peers through %s", service_name, listen, outbound)

    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    stopped.wait()
    log.info("stopping: finishing calls in flight")
    health_servicer.enter_graceful_shutdown()
    server.stop(grace=5).wait()
    provider.shutdown()


if __name__ == "__main__":
    main()

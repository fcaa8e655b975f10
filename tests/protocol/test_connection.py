"""The connection rules, bytes in → events out, bytes out: no sockets, no event loop."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest

from sfumato.protocol import (
    MAX_REFERENCES,
    PROTOCOL_VERSION,
    BadFrame,
    Cancel,
    Cancelled,
    ClientConnection,
    ConnectionState,
    DecodeLimits,
    DeviceStatus,
    Error,
    ErrorCode,
    GetStatus,
    Hello,
    IllegalTransition,
    Image,
    InvalidMessage,
    JobError,
    JobState,
    JobStates,
    JobStatus,
    LimitExceeded,
    Limits,
    LoraWeight,
    ModelInfo,
    Point,
    Progress,
    ProtocolError,
    ProtocolViolation,
    Queued,
    Rect,
    Reference,
    Result,
    ServerConnection,
    Started,
    Status,
    Submit,
    Unknown,
    UpscaleOptions,
    VersionMismatch,
    Welcome,
    decode,
    encode,
    encode_once,
)
from sfumato.protocol.buffers import CHUNK_BYTES, MIN_CHUNK_BYTES
from sfumato.protocol.limits import DEFAULT_LIMITS

PIXELS = Image(width=2, height=2, format="rgba8", data=bytes(range(16)))
LIMITS = Limits(max_message_bytes=1 << 20, max_pixels=1 << 20, max_batch=1, max_queued_per_editor=4, max_controls=0)


def hello(**kw: object) -> bytes:
    return encode(Hello(**{"version": PROTOCOL_VERSION, "client": "test", **kw}))  # type: ignore[arg-type]


def submit(job_id: str = "j") -> Submit:
    return Submit(job_id=job_id, task="img2img", model="m", image=PIXELS)


def server() -> ServerConnection:
    return ServerConnection(DEFAULT_LIMITS, "backend", ("zlib", "resume"))


def open_server(**hello_fields: object) -> ServerConnection:
    conn = server()
    conn.receive(hello(**hello_fields))
    conn.welcome("S1", False, LIMITS, (), "cpu")
    return conn


def welcome(session: str = "S1", resumed: bool = False, version: tuple[int, int] = PROTOCOL_VERSION) -> bytes:
    return encode(
        Welcome(version=version, server="b", session=session, resumed=resumed, limits=LIMITS, models=(), device="cpu")
    )


def open_client(resume: str | None = None, jobs: JobStates | None = None, resumed: bool = False) -> ClientConnection:
    conn = ClientConnection("test", resume=resume, jobs=jobs)
    conn.hello()
    conn.receive(welcome(resume or "S1", resumed))
    return conn


def refused(conn: ServerConnection | ClientConnection, frame: bytes, kind: type[ProtocolError]) -> ProtocolError:
    with pytest.raises(kind) as caught:
        conn.receive(frame)
    return caught.value


# ---------------------------------------------------------------------------- the backend's side


def test_hello_then_welcome_opens_the_connection() -> None:
    conn = server()
    event = conn.receive(hello(capabilities=["zlib"], resume="old"))
    assert isinstance(event, Hello) and event.resume == "old"
    assert conn.state is ConnectionState.AWAITING_WELCOME and conn.version == PROTOCOL_VERSION
    (frame,) = conn.welcome("S1", True, LIMITS, (), "cpu")
    sent = decode(frame)
    assert isinstance(sent, Welcome) and (sent.session, sent.resumed, sent.version) == ("S1", True, PROTOCOL_VERSION)
    assert sent.capabilities == ("zlib", "resume") and conn.state is ConnectionState.OPEN
    assert isinstance(conn.receive(encode(submit())), Submit)


@pytest.mark.parametrize(
    "first",
    [encode(submit()), encode(GetStatus()), msgpack.packb({"type": "from_the_future"})],
    ids=["submit", "get_status", "unknown"],
)
def test_anything_but_hello_first_is_a_violation_answered_fatally(first: bytes) -> None:
    conn = server()
    exc = refused(conn, first, ProtocolViolation)
    assert exc.code == "protocol_violation" and exc.field == "type" and "expected a hello message first" in exc.message
    (frame,) = conn.refuse(exc)
    answer = decode(frame)
    assert isinstance(answer, Error) and answer.fatal and answer.code == "protocol_violation"
    assert conn.state is ConnectionState.CLOSED and conn.closed_by == answer
    refused(conn, hello(), ProtocolViolation)  # nothing is read after the close
    assert conn.send(Queued(job_id="x", position=0)) == []  # nor sent


def test_a_second_hello_is_refused_and_the_connection_stays_open() -> None:
    conn = open_server()
    exc = refused(conn, hello(), ProtocolViolation)
    assert "one hello per connection" in exc.message
    assert conn.state is ConnectionState.OPEN and isinstance(conn.receive(encode(Cancel(job_id="j"))), Cancel)


def test_an_editor_may_not_send_backend_messages() -> None:
    conn = open_server()
    for message in (Queued(job_id="j", position=0), Error(code="internal", message="x")):
        exc = refused(conn, encode(message), ProtocolViolation)
        assert exc.message == f"expected a message an editor may send, got {message.TYPE!r}"


def test_nothing_may_arrive_between_hello_and_welcome() -> None:
    conn = server()
    conn.receive(hello())
    refused(conn, encode(submit()), ProtocolViolation)


def test_versions_negotiate_the_lower_minor_and_refuse_another_major() -> None:
    conn = server()
    conn.receive(hello(version=[PROTOCOL_VERSION[0], 0]))
    assert conn.version == (PROTOCOL_VERSION[0], 0)
    exc = refused(server(), hello(version=[PROTOCOL_VERSION[0] + 1, 0]), VersionMismatch)
    assert (exc.code, exc.field) == ("unsupported_version", "hello.version")


def test_bad_bytes_are_typed_errors_naming_their_job() -> None:
    conn = open_server()
    refused(conn, b"\xc1", BadFrame)
    body = msgpack.unpackb(encode(submit("mine")))
    exc = refused(conn, msgpack.packb({**body, "strength": "high"}), ProtocolError)
    assert (exc.code, exc.field, exc.job_id) == ("bad_message", "submit.strength", "mine")
    assert isinstance(conn.receive(msgpack.packb({"type": "from_the_future"})), Unknown)


def test_the_backend_sends_only_errors_before_its_welcome_and_only_its_own_messages() -> None:
    conn = server()
    conn.receive(hello())
    with pytest.raises(ProtocolViolation):
        conn.send(Queued(job_id="j", position=0))
    with pytest.raises(ProtocolViolation):
        conn.send(decode(welcome()))  # type: ignore[arg-type]  # only through welcome()
    conn.welcome("S1", False, LIMITS, (), "cpu")
    with pytest.raises(ProtocolViolation):
        conn.send(submit())
    (frame,) = conn.send(Error(code="shutting_down", message="bye", fatal=True))
    assert decode(frame) == Error(code="shutting_down", message="bye", fatal=True)
    assert conn.state is ConnectionState.CLOSED and conn.send(Cancelled(job_id="j")) == []


@pytest.mark.parametrize(("asked", "link_wants", "encoding"), [(True, True, "zlib"), (False, True, "raw")])
def test_images_are_compressed_only_for_an_editor_that_asked(asked: bool, link_wants: bool, encoding: str) -> None:
    conn = server()
    conn.receive(hello(capabilities=["zlib"] if asked else []))
    conn.welcome("S1", False, LIMITS, (), "cpu", compress=link_wants)
    (frame,) = conn.send(Progress(job_id="j", step=1, total=2, preview=PIXELS))
    assert msgpack.unpackb(frame)["preview"]["enc"] == encoding
    assert decode(frame) == Progress(job_id="j", step=1, total=2, preview=PIXELS)


# ---------------------------------------------------------------------------- the editor's side


def test_the_editor_says_hello_once_and_waits_for_the_welcome() -> None:
    conn = ClientConnection("krita-test", kind="krita", token="t", resume="S0")
    refused(conn, welcome(), ProtocolViolation)  # the editor speaks first
    (frame,) = conn.hello()
    assert decode(frame) == Hello(
        version=PROTOCOL_VERSION, client="krita-test", kind="krita", token="t", capabilities=("zlib",), resume="S0"
    )
    with pytest.raises(ProtocolViolation):
        conn.hello()
    with pytest.raises(ProtocolViolation):
        conn.send(submit())  # not before the welcome
    refused(conn, encode(Queued(job_id="j", position=0)), ProtocolViolation)
    assert isinstance(conn.receive(welcome("S0", resumed=True)), Welcome)
    assert conn.state is ConnectionState.OPEN and conn.resumed
    refused(conn, welcome(), ProtocolViolation)  # one welcome per connection
    refused(conn, hello(), ProtocolViolation)  # an editor's message from the backend


@pytest.mark.parametrize(("code", "may_reconnect"), [("unauthorized", False), ("shutting_down", True)])
def test_an_error_instead_of_a_welcome_closes_the_connection(code: str, may_reconnect: bool) -> None:
    conn = ClientConnection("test")
    conn.hello()
    error = conn.receive(encode(Error(code=code, message="no", fatal=True)))
    assert isinstance(error, Error) and conn.state is ConnectionState.CLOSED
    assert conn.closed_by == error and conn.may_reconnect is may_reconnect


def test_a_welcome_of_another_major_is_refused() -> None:
    conn = ClientConnection("test")
    conn.hello()
    exc = refused(conn, welcome(version=(PROTOCOL_VERSION[0] + 1, 0)), VersionMismatch)
    assert exc.field == "welcome.version"


def test_job_events_move_the_job_through_the_table() -> None:
    conn = open_client()
    conn.send(submit("j"))
    assert conn.jobs.get("j") is JobState.QUEUED
    events = [
        Queued(job_id="j", position=1),
        Started(job_id="j", steps=2, steps_requested=2, width=2, height=2, seeds=(1,)),
        Progress(job_id="j", step=1, total=2),
        Result(job_id="j", images=(PIXELS,), rect=Rect(x=0, y=0, w=2, h=2), seeds=(1,)),
    ]
    states = []
    for event in events:
        assert conn.receive(encode(event)) == event
        states.append(conn.jobs.get("j"))
    assert states == [JobState.QUEUED, JobState.RUNNING, JobState.RUNNING, JobState.DONE]
    exc = refused(conn, encode(Progress(job_id="j", step=2, total=2)), IllegalTransition)
    assert "'progress' is not allowed in state 'done'" in str(exc) and conn.jobs.get("j") is JobState.DONE
    late = JobError(job_id="j", code="not_found", message="no such job")  # a cancel that raced the result
    assert conn.receive(encode(late)) == late and conn.jobs.get("j") is JobState.DONE
    conn.receive(encode(Error(code="duplicate_job", message="x", job_id="j")))  # never changes a job's state
    assert conn.jobs.get("j") is JobState.DONE
    assert conn.receive(encode(Cancelled(job_id="other"))) == Cancelled(job_id="other")  # not ours: no state
    assert conn.jobs.get("other") is None


def test_a_resumed_session_keeps_its_jobs_and_takes_the_replayed_result_once() -> None:
    first = open_client()
    first.send(submit("away"))
    first.send(submit("waiting"))
    first.receive(encode(Started(job_id="away", steps=2, steps_requested=2, width=2, height=2, seeds=(1,))))
    again = open_client(resume="S1", jobs=first.jobs, resumed=True)
    assert again.resumed and again.jobs.get("away") is JobState.RUNNING
    again.receive(encode(JobStatus(job_id="away", state="done")))
    again.receive(encode(JobStatus(job_id="waiting", state="queued", position=0)))
    assert (again.jobs.get("away"), again.jobs.get("waiting")) == (JobState.DONE, JobState.QUEUED)
    result = Result(job_id="away", images=(PIXELS,), rect=Rect(x=0, y=0, w=2, h=2), seeds=(1,))
    assert again.receive(encode(result)) == result and again.jobs.get("away") is JobState.DONE
    refused(again, encode(result), IllegalTransition)  # only the one the job_status announced
    exc = refused(again, encode(JobStatus(job_id="away", state="running")), IllegalTransition)
    assert exc.message == "event 'job_status running' is not allowed in state 'done'"


def test_a_welcome_that_does_not_resume_forgets_the_jobs() -> None:
    first = open_client()
    first.send(submit("j"))
    fresh = open_client(resume="S1", jobs=first.jobs, resumed=False)
    assert not fresh.resumed and fresh.jobs.get("j") is None
    refused(fresh, encode(JobStatus(job_id="j", state="queued")), ProtocolViolation)  # only after a resume
    fresh.send(submit("j"))  # submitted again: waits from the start
    assert fresh.jobs.get("j") is JobState.QUEUED


def test_a_fatal_error_after_the_welcome_closes_and_says_whether_to_reconnect() -> None:
    conn = open_client()
    conn.receive(encode(Error(code="bad_frame", message="x")))
    assert conn.state is ConnectionState.OPEN
    conn.receive(encode(Error(code="session_replaced", message="another connection", fatal=True)))
    assert conn.state is ConnectionState.CLOSED and not conn.may_reconnect
    assert conn.send(Cancel(job_id="j")) == []
    with pytest.raises(ProtocolViolation):
        ClientConnection("test").send(Queued(job_id="j", position=0))  # never an editor's message


# ---------------------------------------------------------------------------- buffer frames (1.2)

SIDE = 256  # an rgba8 layer of 256 KiB and a mask of 64 KiB: both large enough to travel as buffers


def big_submit(job_id: str = "big") -> Submit:
    layer = Image(width=SIDE, height=SIDE, format="rgba8", data=bytes(range(256)) * (SIDE * SIDE * 4 // 256))
    mask = Image(width=SIDE, height=SIDE, format="gray8", data=bytes([7]) * (SIDE * SIDE))
    return Submit(job_id=job_id, task="inpaint", model="m", image=layer, mask=mask)


def pair(editor_minor: int = PROTOCOL_VERSION[1], limits: object = DEFAULT_LIMITS) -> tuple[ClientConnection, Any]:
    """An editor and a backend connection that have shaken hands through each other's bytes."""
    client = ClientConnection("test", version=(PROTOCOL_VERSION[0], editor_minor))
    backend = ServerConnection(limits, "backend", ())  # type: ignore[arg-type]
    (hello_frame,) = client.hello()
    backend.receive(hello_frame)
    for frame in backend.welcome("S1", False, LIMITS, (), "cpu"):
        client.receive(frame)
    return client, backend


def header_of(message: Submit) -> dict[str, Any]:
    frames = pair()[0].send(message)
    return dict(msgpack.unpackb(frames[0]))


@pytest.mark.parametrize("editor_minor", [1, 6, PROTOCOL_VERSION[1]], ids=["1.1 inline", "1.6 buffers", "chunks"])
def test_a_result_encoded_once_reaches_every_editor_version_whole_even_as_the_backend_says_goodbye(
    editor_minor: int,
) -> None:
    side = 600  # 1.4 MB of pixels: more than one chunk
    data = bytes(range(256)) * (side * side * 4 // 256)
    result = Result(
        job_id="r",
        images=(Image(width=side, height=side, format="rgba8", data=data),),
        rect=Rect(x=0, y=0, w=side, h=side),
        seeds=(3,),
    )
    client, backend = pair(editor_minor)
    client.jobs.submitted("r")
    started = Started(job_id="r", steps=1, steps_requested=1, width=side, height=side, seeds=(3,))
    for frame in backend.send(started):
        client.receive(frame)
    encoded = encode_once(result)
    frames = backend.result_frames(encoded)
    assert len(frames) == {1: 1, 6: 2}.get(editor_minor, 3)  # one inline frame; header + buffer; + a second chunk
    received = [client.receive(frame) for frame in frames]
    assert received[:-1] == [None] * (len(frames) - 1) and received[-1] == result
    backend.send(Error(code=ErrorCode.SHUTTING_DOWN, message="bye", fatal=True))  # the goodbye closes it …
    assert backend.state is ConnectionState.CLOSED
    assert [bytes(f) for f in backend.result_frames(encoded)] == [
        bytes(f) for f in frames
    ]  # … a queued result still goes


def test_large_payloads_travel_as_their_own_frames_without_copies() -> None:
    client, backend = pair()
    assert client.buffers and backend.buffers
    message = big_submit()
    header, layer, mask = client.send(message)
    assert isinstance(layer, memoryview) and layer.obj is message.image.data  # the pixels themselves
    assert isinstance(mask, memoryview) and mask.obj is message.mask.data  # type: ignore[union-attr]
    body = msgpack.unpackb(header)
    assert body["buffers"] == [SIDE * SIDE * 4, SIDE * SIDE]
    assert (body["image"]["buf"], body["mask"]["buf"]) == (0, 1) and "data" not in body["image"]
    assert len(header) < 1024
    received = [bytes(layer), bytes(mask)]  # as a websocket delivers them
    assert backend.receive(header) is None and backend.receive(received[0]) is None
    event = backend.receive(received[1])
    assert event == message
    assert isinstance(event, Submit) and event.image.data is received[0]  # taken as is, not copied


def test_small_payloads_stay_inline_and_older_peers_get_single_frames() -> None:
    client, _ = pair()
    (frame,) = client.send(submit())  # a 2×2 image: one frame
    assert decode(frame) == submit()
    _, old_backend = pair(editor_minor=1)
    assert old_backend.version == (PROTOCOL_VERSION[0], 1) and not old_backend.buffers
    split_header, *_ = client.send(big_submit())
    exc = refused(old_backend, split_header, BadFrame)  # buffer frames were not negotiated
    assert (exc.field, exc.job_id) == ("buffers", "big")
    legacy = ClientConnection("old")
    legacy.hello()
    legacy.receive(welcome(version=(PROTOCOL_VERSION[0], 1)))
    (single,) = legacy.send(big_submit())
    assert old_backend.receive(single) == big_submit()


def test_a_wrong_buffer_frame_drops_the_whole_message() -> None:
    client, backend = pair(editor_minor=6)  # before 1.7 a buffer is exactly one frame
    header, layer, _ = client.send(big_submit("torn"))
    backend.receive(header)
    backend.receive(bytes(layer))
    exc = refused(backend, b"\x00" * 10, BadFrame)  # not the 64 KiB the mask declared
    assert (exc.field, exc.job_id) == ("submit.buffers[1]", "torn") and "expected buffer frame 1" in exc.message
    assert backend.receive(encode(Cancel(job_id="torn"))) == Cancel(job_id="torn")  # nothing kept: a fresh start
    backend.receive(header)
    refused(backend, "a text frame", BadFrame)
    exc = refused(backend, bytes(layer), BadFrame)  # a buffer with no header that declared it
    assert exc.field == "frame"


def test_since_1_7_a_large_buffer_travels_in_chunks_and_arrives_whole() -> None:
    client, backend = pair()
    side = 1024  # 4 MiB of rgba8
    n = side * side * 4
    layer = Image(width=side, height=side, format="rgba8", data=(bytes(range(251)) * (n // 251 + 1))[:n])
    message = Submit(job_id="chunky", task="img2img", model="m", image=layer)
    header, *chunks = client.send(message)
    assert [len(c) for c in chunks] == [CHUNK_BYTES] * 4
    assert all(isinstance(c, memoryview) and c.obj is layer.data for c in chunks)  # slices of the pixels: no copies
    assert backend.receive(header) is None
    assert [backend.receive(bytes(c)) for c in chunks[:-1]] == [None] * 3
    assert backend.receive(bytes(chunks[-1])) == message  # joined bit for bit
    data = layer.data  # a receiver takes any cut of at least MIN_CHUNK_BYTES, not only the reference sender's
    backend.receive(header)
    for cut in (data[:MIN_CHUNK_BYTES], data[MIN_CHUNK_BYTES : CHUNK_BYTES + 17], data[CHUNK_BYTES + 17 : -3]):
        assert backend.receive(cut) is None
    assert backend.receive(data[-3:]) == message  # the last may be as small as it is
    old_client, old_backend = pair(editor_minor=6)  # a 1.6 peer: one frame per buffer, as before
    old_header, whole = old_client.send(message)
    assert len(whole) == len(data) and old_backend.receive(old_header) is None and old_backend.receive(whole) == message


def test_a_chunk_that_overruns_its_buffer_or_is_too_small_drops_the_whole_message() -> None:
    client, backend = pair()
    header, layer, _ = client.send(big_submit("torn"))
    first = MIN_CHUNK_BYTES
    backend.receive(header)
    backend.receive(bytes(layer[:first]))
    exc = refused(backend, bytes(layer[first:]) + b"\x07", BadFrame)  # one byte of the mask's buffer in it
    assert (exc.field, exc.job_id) == ("submit.buffers[0]", "torn")
    assert f"its {len(layer) - first} bytes still due, or a chunk of {MIN_CHUNK_BYTES}.." in exc.message
    assert backend.receive(encode(Cancel(job_id="torn"))) == Cancel(job_id="torn")  # nothing kept: a fresh start
    for small in (b"", bytes(layer[:1000])):  # empty, or a sliver that is not the buffer's last: a 256 MiB
        backend.receive(header)  # buffer in 1-byte frames would hold gigabytes of per-frame overhead
        exc = refused(backend, small, BadFrame)
        assert exc.field == "submit.buffers[0]"
        assert backend.receive(encode(Cancel(job_id="torn"))) == Cancel(job_id="torn")


def test_declared_buffers_are_checked_before_any_is_accepted() -> None:
    body = header_of(big_submit("h"))
    small = DecodeLimits(max_message_bytes=SIDE * SIDE * 5 + 16)  # the pixels fit; with the header they do not
    _, tight = pair(limits=small)
    exc = refused(tight, msgpack.packb(body), LimitExceeded)
    assert (exc.field, exc.job_id) == ("submit.buffers", "h")
    cases = {
        "submit.image": {**body, "image": {**body["image"], "buf": 1}},  # used twice
        "submit.buffers": {**body, "buffers": [*body["buffers"], 5]},  # one unused
        "submit.mask": {**body, "buffers": [body["buffers"][0], 99]},  # not the mask's size
        "submit.buffers ": {**body, "buffers": "many"},
    }
    _, backend = pair()
    for field, bad in cases.items():
        exc = refused(backend, msgpack.packb(bad), ProtocolError)
        assert exc.field == field.strip(), (field, exc)
    no_list = {k: v for k, v in body.items() if k != "buffers"}
    assert refused(backend, msgpack.packb(no_list), ProtocolError).field == "submit.image"
    both = {**body, "image": {**body["image"], "data": b"x"}}
    assert "either data or a buffer" in refused(backend, msgpack.packb(both), ProtocolError).message
    assert isinstance(backend.receive(encode(GetStatus())), GetStatus)  # none of it was kept


def test_an_unknown_message_is_skipped_with_its_buffers() -> None:
    _, backend = pair()
    header = msgpack.packb({"type": "from_the_future", "buffers": [3, 2]})
    assert backend.receive(header) is None and backend.receive(b"abc") is None
    skipped = backend.receive(b"de")
    assert isinstance(skipped, Unknown) and skipped.type == "from_the_future"


# ---------------------------------------------------------------------------- 1.3: LoRAs, VAEs, model details

MODELS = (
    ModelInfo(id="ckpt", kind="checkpoint", arch="sd15", label="ckpt", size_bytes=2 << 30),
    ModelInfo(id="cn", kind="controlnet", arch="sd15", label="cn"),
    ModelInfo(id="broken", kind="checkpoint", arch="sd15", label="broken", problem="no VAE inside"),
    ModelInfo(id="Lora/detail", kind="lora", arch="sd15", label="detail", size_bytes=1 << 20),
    ModelInfo(id="old", kind="unusable", arch="unknown", label="old", problem="a pickle"),
)


def test_a_1_2_editor_is_welcomed_with_usable_checkpoints_and_controlnets_only() -> None:
    conn = server()
    conn.receive(hello(version=[1, 2]))
    (frame,) = conn.welcome("S1", False, LIMITS, MODELS, "cpu")
    raw = msgpack.unpackb(frame)
    assert [m["id"] for m in raw["models"]] == ["ckpt", "cn"]  # a 1.2 decoder would refuse kind "lora"
    conn = server()
    conn.receive(hello())
    sent = decode(conn.welcome("S1", False, LIMITS, MODELS, "cpu")[0])
    assert isinstance(sent, Welcome) and sent.models == MODELS


def test_an_editor_does_not_send_loras_or_a_vae_to_a_1_2_backend() -> None:
    with_lora = Submit(job_id="j", task="img2img", model="m", image=PIXELS, loras=(LoraWeight(id="Lora/x"),))
    with_vae = Submit(job_id="k", task="img2img", model="m", image=PIXELS, vae="VAE/x")
    old = ClientConnection("test")
    old.hello()
    old.receive(welcome(version=(1, 2)))
    for message, field in ((with_lora, "submit.loras"), (with_vae, "submit.vae")):
        with pytest.raises(ProtocolViolation) as caught:
            old.send(message)
        assert caught.value.field == field and "older protocol" in caught.value.message
    assert old.send(submit())  # a plain request still goes
    assert open_client().send(with_lora)


def test_a_lora_listed_twice_is_refused() -> None:
    with pytest.raises(InvalidMessage, match="each LoRA once"):
        Submit(job_id="j", task="img2img", model="m", image=PIXELS, loras=(LoraWeight(id="a"), LoraWeight(id="a")))


# ---------------------------------------------------------------------------- 1.4: devices, worker_failed

DEVICES = (
    DeviceStatus(device="cuda:0", state="running", loaded_models=("ckpt",)),
    DeviceStatus(device="cuda:1", state="idle"),
)


def test_a_1_4_editor_sees_every_device_and_a_1_3_editor_sees_the_first_only() -> None:
    conn = server()
    conn.receive(hello())
    sent = decode(conn.welcome("S1", False, LIMITS, MODELS, "cuda:0", devices=DEVICES)[0])
    assert isinstance(sent, Welcome) and sent.devices == DEVICES
    status = Status(queue_length=0, running=1, editors=1, loaded_models=("ckpt",), device="cuda:0", devices=DEVICES)
    assert decode(conn.send(status)[0]) == status
    assert decode(conn.send(JobError(job_id="j", code=ErrorCode.WORKER_FAILED, message="m"))[0]).code == "worker_failed"

    old = server()
    old.receive(hello(version=[1, 3]))
    raw = msgpack.unpackb(old.welcome("S1", False, LIMITS, MODELS, "cuda:0", devices=DEVICES)[0])
    assert raw["devices"] == [] and raw["device"] == "cuda:0"
    seen = decode(old.send(status)[0])
    assert isinstance(seen, Status) and seen.devices == () and seen.loaded_models == ("ckpt",) and seen.running == 1
    failed = decode(old.send(JobError(job_id="j", code=ErrorCode.WORKER_FAILED, message="m"))[0])
    assert isinstance(failed, JobError) and failed.code == ErrorCode.INTERNAL  # a code 1.3 documents


# ---------------------------------------------------------------------------- 1.5: upscale, upscalers

UPSCALER = ModelInfo(id="ESRGAN/x4", kind="upscaler", arch="esrgan", label="x4")


def upscale(job_id: str = "u", factor: int = 2) -> Submit:
    return Submit(job_id=job_id, task="upscale", model="m", image=PIXELS, upscale=UpscaleOptions(factor=factor))


def test_a_1_4_editor_sees_no_upscalers_and_may_not_ask_for_an_upscale() -> None:
    conn = server()
    conn.receive(hello(version=[1, 4]))
    (frame,) = conn.welcome("S1", False, LIMITS, (*MODELS, UPSCALER), "cpu")
    assert "upscaler" not in [m["kind"] for m in msgpack.unpackb(frame)["models"]]  # a 1.4 decoder would refuse it
    error = refused(conn, encode(upscale("up-1")), ProtocolViolation)
    assert (error.field, error.job_id) == ("submit.task", "up-1")
    assert conn.state is ConnectionState.OPEN and isinstance(conn.receive(encode(submit())), Submit)
    new = server()
    new.receive(hello())
    sent = decode(new.welcome("S1", False, LIMITS, (UPSCALER,), "cpu")[0])
    assert isinstance(sent, Welcome) and sent.models == (UPSCALER,)
    assert isinstance(new.receive(encode(upscale())), Submit)


def test_an_editor_does_not_send_an_upscale_to_a_1_4_backend() -> None:
    old = ClientConnection("test")
    old.hello()
    old.receive(welcome(version=(1, 4)))
    with pytest.raises(ProtocolViolation, match="cannot upscale"):
        old.send(upscale())
    assert open_client().send(upscale())


def test_upscale_options_are_checked() -> None:
    with pytest.raises(InvalidMessage, match="factor of 2 or 4"):
        upscale(factor=3)
    with pytest.raises(InvalidMessage, match="half the tile"):
        UpscaleOptions(tile=128, overlap=64)
    with pytest.raises(InvalidMessage, match="no mask"):
        Submit(
            job_id="j",
            task="upscale",
            model="m",
            image=PIXELS,
            mask=Image(width=2, height=2, format="gray8", data=bytes(4)),
        )
    big = Submit(
        job_id="j", task="upscale", model="m", image=PIXELS, origin=Point(x=3, y=1), upscale=UpscaleOptions(factor=4)
    )
    assert big.output_rect == Rect(x=12, y=4, w=8, h=8)


# ---------------------------------------------------------------------------- 1.6: references, IP-Adapters

IPADAPTER = ModelInfo(id="ipadapter/ip-adapter_sd15", kind="ipadapter", arch="sd15", label="ip-adapter_sd15")
ENCODER = ModelInfo(id="clip_vision/vit-h", kind="clip_vision", arch="vit-h", label="vit-h")
REFERENCE = Reference(image=PIXELS, weight=0.5, mode="style")


def with_reference(job_id: str = "r") -> Submit:
    return dataclasses.replace(submit(), job_id=job_id, references=(REFERENCE,))


def test_a_1_5_editor_sees_no_ipadapters_and_may_not_send_references() -> None:
    conn = server()
    conn.receive(hello(version=[1, 5]))
    (frame,) = conn.welcome("S1", False, LIMITS, (*MODELS, IPADAPTER, ENCODER), "cpu")
    kinds = [m["kind"] for m in msgpack.unpackb(frame)["models"]]
    assert "ipadapter" not in kinds and "clip_vision" not in kinds and "checkpoint" in kinds
    error = refused(conn, encode(with_reference("ref-1")), ProtocolViolation)
    assert (error.field, error.job_id) == ("submit.references", "ref-1")
    assert conn.state is ConnectionState.OPEN and isinstance(conn.receive(encode(submit())), Submit)
    new = server()
    new.receive(hello())
    sent = decode(new.welcome("S1", False, LIMITS, (IPADAPTER, ENCODER), "cpu")[0])
    assert isinstance(sent, Welcome) and sent.models == (IPADAPTER, ENCODER)
    got = new.receive(encode(with_reference()))
    assert isinstance(got, Submit) and got.references == (REFERENCE,)


def test_an_editor_does_not_send_references_to_a_1_5_backend() -> None:
    old = ClientConnection("test")
    old.hello()
    old.receive(welcome(version=(1, 5)))
    with pytest.raises(ProtocolViolation, match="reference images"):
        old.send(with_reference())
    assert open_client().send(with_reference())


def test_references_are_checked() -> None:
    with pytest.raises(InvalidMessage, match="at most 1024 px"):
        Reference(image=Image(width=1025, height=1, format="rgba8", data=bytes(1025 * 4)))
    with pytest.raises(InvalidMessage, match="one of"):
        Reference(image=PIXELS, mode="pose")
    with pytest.raises(InvalidMessage, match=r"0\.0\.\.2\.0"):
        Reference(image=PIXELS, weight=2.5)
    with pytest.raises(InvalidMessage, match="no references for an upscale"):
        Submit(job_id="j", task="upscale", model="m", image=PIXELS, references=(REFERENCE,))
    assert len(dataclasses.replace(submit(), references=(REFERENCE,) * MAX_REFERENCES).references) == 4
    with pytest.raises(InvalidMessage, match="references"):
        dataclasses.replace(submit(), references=(REFERENCE,) * (MAX_REFERENCES + 1))


# ---------------------------------------------------------------------------- 1.6: live jobs, supersede


def live(job_id: str = "l") -> Submit:
    return Submit(job_id=job_id, task="img2img", model="m", image=PIXELS, live=True)


def test_a_1_5_editor_may_not_send_a_live_job_and_never_hears_superseded_by() -> None:
    conn = server()
    conn.receive(hello(version=[1, 5]))
    conn.welcome("S1", False, LIMITS, (), "cpu")
    error = refused(conn, encode(live("live-1")), ProtocolViolation)
    assert (error.field, error.job_id) == ("submit.live", "live-1")
    assert conn.state is ConnectionState.OPEN and isinstance(conn.receive(encode(submit())), Submit)
    (frame,) = conn.send(Cancelled(job_id="j", superseded_by="k"))
    assert "superseded_by" not in msgpack.unpackb(frame) or msgpack.unpackb(frame)["superseded_by"] is None
    new = open_server()
    received = new.receive(encode(live()))
    assert isinstance(received, Submit) and received.live
    sent = decode(new.send(Cancelled(job_id="j", superseded_by="k"))[0])
    assert isinstance(sent, Cancelled) and sent.superseded_by == "k"


def test_an_editor_does_not_send_a_live_job_to_a_1_5_backend() -> None:
    old = ClientConnection("test")
    old.hello()
    old.receive(welcome(version=(1, 5)))
    with pytest.raises(ProtocolViolation, match="cannot paint live"):
        old.send(live())
    assert old.jobs.get("l") is None  # refused before it was tracked
    assert open_client().send(live())


def test_a_superseded_job_ends_cancelled_in_the_editors_tracker_whether_queued_or_running() -> None:
    conn = open_client()
    for job_id in ("a", "b"):
        conn.send(live(job_id))
    conn.receive(encode(Queued(job_id="a", position=0)))
    conn.receive(encode(Started(job_id="a", steps=2, steps_requested=2, width=2, height=2, seeds=(1,))))
    conn.receive(encode(Queued(job_id="b", position=0)))
    for old, new in (("a", "b"), ("b", "c")):
        if new == "c":
            conn.send(live("c"))
        event = conn.receive(encode(Cancelled(job_id=old, superseded_by=new)))
        assert isinstance(event, Cancelled) and event.superseded_by == new
        assert conn.jobs.get(old) is JobState.CANCELLED
    assert conn.jobs.get("c") is JobState.QUEUED

#!/usr/bin/env python3
"""A hospital vendor's client in another language: the ingest contract exercised from Python grpcio.

Generates the stubs from proto/ with grpc_tools.protoc, connects with the hospital's client certificate
(mutual TLS 1.3) and checks what docs/ingest.md promises: receipts, per-record rejections, ErrorInfo reasons on
whole-request refusals (unary and streaming), opt-out matching, and a receipt for 60,000 rejections that fits
grpcio's default 4 MiB receive limit. Prints one line per case; exits 1 on the first broken promise.

Usage: hospital_client.py ENDPOINT CA CERT KEY PROTO_DIR
"""
import importlib
import sys
import tempfile

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from grpc_tools import protoc


def stubs(proto_dir, out):
    code = protoc.main(
        ["protoc", f"-I{proto_dir}", f"--python_out={out}", f"--grpc_python_out={out}",
         "tokumei/ingest/v1/ingest.proto"]
    )
    if code != 0:
        sys.exit(f"protoc failed ({code})")
    sys.path.insert(0, out)
    return (importlib.import_module("tokumei.ingest.v1.ingest_pb2"),
            importlib.import_module("tokumei.ingest.v1.ingest_pb2_grpc"))


def reason(err):
    status = rpc_status.from_call(err)
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return None


def expect(cond, what):
    if not cond:
        print(f"FAIL {what}", flush=True)
        sys.exit(1)
    print(f"ok   {what}", flush=True)


def record(pb, local_id, **changes):
    r = pb.PatientRecord(
        local_patient_id=local_id,
        insurance=pb.Insurance(insurer_number="06135018", symbol="ア12", number=f"77{local_id}", branch="01"),
        kana_name="スズキ　タロウ",
        birth_date="1960-02-03",
        sex=pb.MALE,
        postal_code="100-0001",
        municipality_code="131016",
        encounters=[pb.Encounter(admission_date="2024-05-01", discharge_date="2024-05-03",
                                 kind="inpatient", department="内科")],
    )
    for k, v in changes.items():
        setattr(r, k, v)
    return r


def refused(call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except grpc.RpcError as err:
        return err
    return None


def main():
    endpoint, ca, cert, key, proto_dir = sys.argv[1:6]
    out = tempfile.mkdtemp(prefix="tokumei-py-")
    pb, rpc = stubs(proto_dir, out)
    creds = grpc.ssl_channel_credentials(
        root_certificates=open(ca, "rb").read(),
        private_key=open(key, "rb").read(),
        certificate_chain=open(cert, "rb").read(),
    )
    channel = grpc.secure_channel(endpoint, creds)
    ingest = rpc.IngestServiceStub(channel)

    receipt = ingest.Push(iter([pb.RecordBatch(batch_id="py-1", records=[record(pb, "PY1"), record(pb, "PY2")])]),
                          timeout=30)
    expect(receipt.accepted == 2 and receipt.batches[0].batch_id == "py-1", "a batch is accepted with its receipt")

    again = ingest.Push(iter([pb.RecordBatch(batch_id="py-1", records=[record(pb, "PY1"), record(pb, "PY2")])]),
                        timeout=30)
    expect(again.batches[0].replayed and again.accepted == 2, "the same batch again is a replay")

    mixed = ingest.Push(iter([pb.RecordBatch(batch_id="py-2", records=[
        record(pb, "PY3"),
        record(pb, "PY4", kana_name="スズキ　１２３４\u00a05678\u00a09018"),
        record(pb, "PY5", birth_date="1960-13-40"),
    ])]), timeout=30)
    reasons = sorted(r.reason for r in mixed.rejected)
    expect(mixed.accepted == 1 and reasons == ["INVALID_DATE", "MY_NUMBER_PRESENT"],
           f"records are rejected one by one with their reasons {reasons}")
    expect(all("1234" not in r.detail and "1960-13-40" not in r.detail for r in mixed.rejected),
           "rejection details never echo a value")

    err = refused(ingest.Push, iter([pb.RecordBatch(batch_id="bad id!", records=[record(pb, "PY6")])]), timeout=30)
    expect(err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT and reason(err) == "INVALID_BATCH_ID",
           "an invalid batch id is INVALID_ARGUMENT with ErrorInfo INVALID_BATCH_ID")

    raw = channel.unary_unary("/tokumei.ingest.v1.IngestService/OptOut",
                              request_serializer=lambda b: b, response_deserializer=lambda b: b)
    err = refused(raw, b"\x0a\x02\xff\xfe", timeout=30)
    expect(err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT and reason(err) == "MALFORMED_MESSAGE",
           "bytes that are not a PatientRequest are INVALID_ARGUMENT with MALFORMED_MESSAGE")

    raw_push = channel.stream_unary("/tokumei.ingest.v1.IngestService/Push",
                                    request_serializer=lambda b: b, response_deserializer=lambda b: b)
    err = refused(raw_push, iter([b"\x0a\x03\xc3\x28\x41"]), timeout=30)
    expect(err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT and reason(err) == "MALFORMED_MESSAGE",
           "a stream message that is not a RecordBatch is INVALID_ARGUMENT with MALFORMED_MESSAGE")

    r = ingest.OptOut(pb.PatientRequest(request_id="py-req-1", kana_name="ｽｽﾞｷ ﾀﾛｳ", birth_date="1960-02-03",
                                        sex=pb.MALE), timeout=30)
    expect(r.status == "RECORDED" and r.matched_by == "ID4", "an opt-out by kana name + birth date + sex is recorded")
    after = ingest.Push(iter([pb.RecordBatch(batch_id="py-3", records=[record(pb, "PY7")])]), timeout=30)
    expect(after.accepted == 0 and after.rejected[0].reason == "OPTED_OUT",
           "this hospital's next record of the patient is OPTED_OUT")
    err = refused(ingest.OptOut, pb.PatientRequest(request_id="py-req-1", local_patient_id="OTHER"), timeout=30)
    expect(err is not None and err.code() == grpc.StatusCode.ALREADY_EXISTS and reason(err) == "REQUEST_ID_REUSED",
           "a request id reused for another patient is ALREADY_EXISTS / REQUEST_ID_REUSED")

    # 60,000 rejected records in one stream (12 batches): the receipt stays under grpcio's default 4 MiB.
    def batches():
        for b in range(12):
            yield pb.RecordBatch(batch_id=f"py-big-{b}", records=[
                pb.PatientRecord(local_patient_id=f"B{b}-{i}", birth_date="bad") for i in range(5000)])
    big = ingest.Push(batches(), timeout=120)
    expect(big.rejected_total == 60000 and len(big.rejected) == 1000 and big.ByteSize() < 1 << 20,
           f"a receipt for 60,000 rejections is {big.ByteSize()} bytes with counts per reason")
    channel.close()


if __name__ == "__main__":
    main()

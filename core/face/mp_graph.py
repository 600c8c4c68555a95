"""MediaPipe graphs run lean: packets in, serialized protos out.

MediaPipe's SolutionBase.process builds a new namedtuple class and parses every output proto into Python
messages on each call; the face pipeline then reads the landmarks back out of their wire bytes
(core.face.detection.landmarks_to_pixels). On a tracked 640x480 frame that was 0.4-1.0 ms of a 4-5 ms mesh
call (`python -m core.bench live`, docs/limits.md). LeanGraph feeds a solution's graph the same packets with
the same timestamps and hands back the outputs' serialized bytes. It reaches into SolutionBase's attributes
(mediapipe is pinned; tests/test_faces.py checks that it gives what the solution gives).
"""

from __future__ import annotations

import os
from functools import cache

# SolutionBase's own step: a 30 frames/s video, so tracking graphs see increasing timestamps
_TIMESTAMP_STEP = 33333


class LeanGraph:
    """One MediaPipe solution (FaceMesh, FaceDetection, a SolutionBase of our own), called without its
    per-call wrapping; not thread-safe, like the solution itself (FaceDetector locks)."""

    def __init__(self, solution):
        self._solution = solution

    def run(self, inputs: dict) -> dict[str, list[bytes]]:
        """Each observed output stream's serialized protos (a list; [] when the graph emitted nothing)."""
        from mediapipe.python._framework_bindings import _packet_getter
        from mediapipe.python.solution_base import PacketDataType

        s = self._solution
        s._graph_outputs.clear()
        s._simulated_timestamp += _TIMESTAMP_STEP
        for name, data in inputs.items():
            if name not in s._input_stream_type_info:
                raise ValueError(f"the graph has no input stream {name!r}")
            packet = s._make_packet(s._input_stream_type_info[name], data)
            s._graph.add_packet_to_input_stream(stream=name, packet=packet.at(s._simulated_timestamp))
        s._graph.wait_until_idle()
        out = {}
        for name, kind in s._output_stream_type_info.items():
            packet = s._graph_outputs.get(name)
            if packet is None or packet.is_empty():  # no face: an empty packet at the timestamp bound
                out[name] = []
            elif kind == PacketDataType.PROTO_LIST:
                out[name] = list(_packet_getter._get_serialized_proto_list(packet))
            elif kind == PacketDataType.PROTO:
                out[name] = [_packet_getter._get_serialized_proto(packet)]
            else:
                raise TypeError(f"output stream {name!r} carries {kind}, not protos")
        return out

    def close(self) -> None:
        self._solution.close()


def inference_threads() -> int:
    """$EXPRESSIONLAB_MP_THREADS, else 1: XNNPACK threads of each MediaPipe model. Two cut a tracked live frame
    by 1.4-2.0 ms on an idle 2-core machine but cost half as much CPU again (the workers spin between layers),
    gave the photo path 15.0-19.0 ms against 15.8-16.0, and the second core is what other streams run on
    (docs/limits.md)."""
    raw = os.environ.get("EXPRESSIONLAB_MP_THREADS", "1")
    if not raw.strip().isdigit() or int(raw) < 1:
        raise ValueError(f"$EXPRESSIONLAB_MP_THREADS must be a whole number of threads, at least 1, not {raw!r}")
    return int(raw)


def lean(solution_class, threads: int | None = None, **kwargs) -> LeanGraph:
    """A LeanGraph of `solution_class(**kwargs)` (FaceMesh, FaceDetection, SolutionBase) whose TFLite models run
    on `threads` XNNPACK threads (inference_threads() by default).

    MediaPipe's desktop builds give XNNPACK one thread and the solutions offer no option for it, so the graph is
    expanded as SolutionBase expands it (subgraphs inlined) and every InferenceCalculator's XNNPACK delegate is
    given the count; the models, and so the landmarks, are the same (tests/test_faces.py).
    """
    from mediapipe.python.solution_base import SolutionBase

    count = inference_threads() if threads is None else threads
    if count < 1:
        raise ValueError(f"a MediaPipe model needs at least one thread, not {count}")
    if solution_class is SolutionBase:
        config = kwargs.pop("graph_config", None) or kwargs.pop("binary_graph_path")
        return LeanGraph(SolutionBase(graph_config=_with_threads(_expanded(config), count), **kwargs))
    threaded = type(solution_class.__name__, (solution_class, _threaded_base()), {"_threads": count})
    return LeanGraph(threaded(**kwargs))


def _expanded(config):
    """The CalculatorGraphConfig of a .binarypb path (relative to mediapipe's root, as the solutions give it) or of
    a config, with its subgraphs inlined."""
    import mediapipe as mp
    from mediapipe.framework import calculator_pb2
    from mediapipe.python._framework_bindings import validated_graph_config

    validated = validated_graph_config.ValidatedGraphConfig()
    if isinstance(config, str):
        validated.initialize(binary_graph_path=os.path.join(os.path.dirname(os.path.dirname(mp.__file__)), config))
    else:
        validated.initialize(graph_config=config)
    out = calculator_pb2.CalculatorGraphConfig()
    out.ParseFromString(validated.binary_config)
    return out


def _with_threads(config, threads: int):
    from mediapipe.calculators.tensor.inference_calculator_pb2 import InferenceCalculatorOptions

    for node in config.node:
        if not node.calculator.startswith("InferenceCalculator"):
            continue
        if node.node_options:  # proto3-style options
            for packed in node.node_options:
                if packed.type_url.endswith("/" + InferenceCalculatorOptions.DESCRIPTOR.full_name):
                    options = InferenceCalculatorOptions.FromString(packed.value)
                    _set_xnnpack_threads(options, threads)
                    packed.value = options.SerializeToString()
        else:
            _set_xnnpack_threads(node.options.Extensions[InferenceCalculatorOptions.ext], threads)
    return config


def _set_xnnpack_threads(options, threads: int) -> None:
    """Threads of an XNNPACK delegate (or of the default one, which is XNNPACK on CPU); a model set to another
    delegate keeps it."""
    if options.delegate.WhichOneof("delegate") in (None, "xnnpack"):
        options.delegate.xnnpack.num_threads = threads


@cache
def _threaded_base():
    from mediapipe.python.solution_base import SolutionBase

    class ThreadedBase(SolutionBase):
        """Sits between a solution and SolutionBase: the solution's graph path becomes a threaded config."""

        _threads = 1

        def __init__(self, binary_graph_path=None, graph_config=None, **kwargs):
            config = _with_threads(_expanded(binary_graph_path or graph_config), self._threads)
            super().__init__(graph_config=config, **kwargs)

    return ThreadedBase


def parse(serialized: list[bytes], message_class) -> list:
    """The messages of run()'s list for one stream (for the few whose fields are read one by one)."""
    return [message_class.FromString(wire) for wire in serialized]

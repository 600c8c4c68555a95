"""MediaPipe graphs run lean: packets in, serialized protos out.

MediaPipe's SolutionBase.process builds a new namedtuple class and parses every output proto into Python
messages on each call; the face pipeline then reads the landmarks back out of their wire bytes
(core.face.detection.landmarks_to_pixels). On a tracked 640x480 frame that was 0.4-1.0 ms of a 4-5 ms mesh
call (`python -m core.bench live`, docs/limits.md). LeanGraph feeds a solution's graph the same packets with
the same timestamps and hands back the outputs' serialized bytes. It reaches into SolutionBase's attributes
(mediapipe is pinned; tests/test_faces.py checks that it gives what the solution gives).
"""

from __future__ import annotations

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


def parse(serialized: list[bytes], message_class) -> list:
    """The messages of run()'s list for one stream (for the few whose fields are read one by one)."""
    return [message_class.FromString(wire) for wire in serialized]

"""The deployable part of robodistill: what runs beside a robot, without the training code.

It imports only numpy (onnxruntime for exported students; websockets and msgpack for serving), never torch,
MuJoCo or hydra, so that it installs light on a robot computer. Import the submodules you need
(`robodistill.runtime.server`, `robodistill.runtime.client`, `robodistill.runtime.wire`); this package imports none.
"""

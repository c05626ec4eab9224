"""Orthogonal views (xz, yz) beside the xy canvas, for annotating in 3D."""

import numpy as np
from qtpy.QtWidgets import QApplication

from napari_semietpicker._qt._layer_tools import add_points_layer, world_points
from napari_semietpicker._qt.annotation import AnnotationWidget
from napari_semietpicker.classes import ParticleClass
from napari_semietpicker.io.picks import empty_picks
from napari_semietpicker.layers import META, PICKS

VOXEL = 10.0


def test_orthogonal_views_share_layers_slices_and_picks(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    volume = np.zeros((16, 40, 48), np.float32)
    volume[4:12, 10:30, 20:40] = 1.0  # a box that each view cuts through
    viewer.add_image(volume, name="t", scale=(VOXEL,) * 3,
                     metadata={META: {"tomogram": "t", "voxel_size": VOXEL}})
    cls = ParticleClass("ribosome", 50.0, 1.0, "#ff8800")
    picks = add_points_layer(viewer, empty_picks(), cls, "t", PICKS)
    widget = AnnotationWidget(viewer)
    viewer.window.add_dock_widget(widget)

    widget.ortho_toggle.setChecked(True)  # the user ticks "Orthogonal views"
    views = widget.ortho_toggle.views
    assert views is not None
    xz, yz = views.models
    assert [la.name for la in xz.layers] == ["t", picks.name] == [la.name for la in yz.layers]
    assert tuple(xz.dims.displayed) == (0, 2) and tuple(yz.dims.displayed) == (0, 1)
    assert views.copies(viewer.layers["t"])[0].data is volume  # shared, not copied
    for _ in range(10):
        QApplication.processEvents()
    shot = views.canvases[0].screenshot(flash=False)
    assert shot[..., :3].std() > 5  # the xz canvas draws the box

    viewer.dims.current_step = (8, 20, 30)  # the shared slice point follows the main view
    assert xz.dims.current_step == (8, 20, 30) == yz.dims.current_step
    xz.dims.current_step = (8, 25, 30)  # moving through y in the xz view moves the main view
    assert viewer.dims.current_step == (8, 25, 30) and yz.dims.current_step[1] == 25
    assert xz.dims.margin_left == viewer.dims.margin_left  # picks show in thick slices

    xz_picks = views.copies(picks)[0]
    xz_picks.add(np.array([[8.0, 25.0, 30.0]]))  # a pick clicked in the xz view...
    np.testing.assert_allclose(world_points(picks), [[80.0, 250.0, 300.0]])  # ...is the main's
    assert len(views.copies(picks)[1].data) == 1
    assert widget.counts()["ribosome"] == 1
    picks.add(np.array([[2.0, 3.0, 4.0]]))  # and one made in the xy view shows in both
    assert all(len(copy.data) == 2 for copy in views.copies(picks))
    picks.visible = False
    assert not any(copy.visible for copy in views.copies(picks))

    widget.ortho_toggle.setChecked(False)
    assert widget.ortho_toggle.views is None and len(xz.layers) == 0
    picks.add(np.array([[1.0, 1.0, 1.0]]))  # nothing is left connected
    assert len(picks.data) == 3

"""The CNNs (Keras 3): the GZ2 layer, the builders, the loss, augmentation, and the cnn and
features stages run through the Celery tasks on an ingested, preprocessed synthetic survey."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from django.core.management import call_command

from catalogue.models import FeatureSet, FeatureVector, Galaxy, Run, Survey, TrainedModel
from catalogue.orchestration.stage import start_stage
from catalogue.selectors import feature_matrix
from catalogue.services.artifacts import load_keras_model
from catalogue.services.image_store import row_reader, stacked_reader, stacked_rows, written_rows
from catalogue.services.ingest import ingest_bundle
from pipeline import gz2
from pipeline.cnn import networks
from pipeline.cnn.data import ImageBatches, augment, symmetry
from pipeline.cnn.gz2_layer import GZ2Normalisation
from pipeline.cnn.losses import weighted_l1
from pipeline.cnn.training import predict_layers
from pipeline.presets import FEATURE_LAYERS, preset, role_training

# --- the pieces --------------------------------------------------------------------


def test_gz2_layer_matches_the_tree_by_hand():
    outputs = np.zeros((1, gz2.N_ANSWERS), np.float32)
    index = gz2.ANSWER_INDEX
    outputs[0, [index["a01"], index["a02"], index["a03"]]] = [1.0, 3.0, 0.0]  # smooth 0.25, features 0.75
    outputs[0, [index["a04"], index["a05"]]] = [2.0, 2.0]  # edge-on given features: 0.5
    outputs[0, [index["a08"], index["a09"]]] = [9.0, 1.0]  # spiral given not edge-on: 0.9
    outputs[0, [index["a14"], index["a15"]]] = [1.0, 4.0]  # odd: 0.2 of (smooth + features)
    probabilities = np.asarray(GZ2Normalisation()(outputs))[0]
    assert probabilities[index["a01"]] == pytest.approx(0.25, abs=1e-6)
    assert probabilities[index["a04"]] == pytest.approx(0.75 * 0.5, abs=1e-6)
    assert probabilities[index["a08"]] == pytest.approx(0.75 * 0.5 * 0.9, abs=1e-6)
    assert probabilities[index["a14"]] == pytest.approx(0.2 * 1.0, abs=1e-6)
    # Tasks with all-zero outputs get uniform fractions of the probability they are asked.
    assert probabilities[index["a28"]] == pytest.approx(0.75 * 0.5 * 0.9 / 3, abs=1e-6)


def test_gz2_layer_agrees_with_the_ingest_conversion():
    raw = np.abs(np.random.default_rng(0).normal(size=(64, gz2.N_ANSWERS))).astype(np.float32)
    fractions = np.concatenate(
        [raw[:, gz2.TASK_SLICES[t.id]] / raw[:, gz2.TASK_SLICES[t.id]].sum(1, keepdims=True) for t in gz2.TASKS], axis=1
    )
    np.testing.assert_allclose(np.asarray(GZ2Normalisation()(raw)), gz2.conditional_to_unconditional(fractions), atol=1e-6)


def test_gz2_layer_is_differentiable():
    inputs = keras.Input((8,))
    model = keras.Model(inputs, GZ2Normalisation()(keras.layers.Dense(gz2.N_ANSWERS, activation="softplus")(inputs)))
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    x = np.random.default_rng(1).normal(size=(128, 8)).astype(np.float32)
    y = gz2.conditional_to_unconditional(np.random.default_rng(2).dirichlet(np.ones(gz2.N_ANSWERS), 128)).astype(np.float32)
    history = model.fit(x, y, epochs=5, verbose=0).history["loss"]
    assert np.all(np.isfinite(history)) and history[-1] < history[0]


def test_builders_return_named_models_with_named_feature_layers():
    custom = networks.build_custom_cnn(69)
    assert [layer.name for layer in custom.layers if "conv" in layer.name] == ["conv1", "conv2", "conv3", "conv4"]
    assert [custom.get_layer(f"conv{k}").kernel_size for k in range(1, 5)] == [(5, 5), (4, 4), (3, 3), (3, 3)]
    assert all(custom.get_layer(f"conv{k}").padding == "valid" for k in range(1, 5))
    assert custom.get_layer("pool").output.shape[-1] == 128 and custom.get_layer("dense").units == 512
    assert custom.output.shape[-1] == gz2.N_ANSWERS
    resnet = networks.build_resnet50(64, name="cnn1_resnet50")
    assert resnet.name == "cnn1_resnet50" and resnet.get_layer("pool").output.shape[-1] == 2048
    assert resnet.input.shape[1:] == (64, 64, 1)
    xception = networks.build_xception(71)
    assert xception.get_layer("dense").units == 256
    ml = networks.build_ml_network(custom)
    assert ml.output.shape[-1] == 1 and ml.get_layer("gz2_logits").output.shape[-1] == gz2.N_ANSWERS
    np.testing.assert_array_equal(ml.get_layer("conv1").get_weights()[0], custom.get_layer("conv1").get_weights()[0])
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        networks.build_resnet50(64, weights_path="/nonexistent/resnet50_notop.h5")
    with pytest.raises(ValueError, match="at least 46 px"):
        networks.build_custom_cnn(32)


def test_the_colour_network_starts_as_cnn1_on_g_and_learns_what_i_adds():
    """CNN4 on colour: CNN1's weights on a stack of g and i, the i channel's kernel zero at the start."""
    keras.utils.set_random_seed(0)
    options = {"width": 0.125, "dense_units": 16, "dropout": 0.0}
    cnn1 = networks.build_custom_cnn(48, **options)
    colour = networks.build_colour_ml_network(cnn1, options, 2, name="cnn4gi_custom")
    assert colour.name == "cnn4gi_custom" and colour.input.shape[1:] == (48, 48, 2) and colour.output.shape[-1] == 1
    rng = np.random.default_rng(2)
    g, i = rng.random((3, 48, 48, 1), dtype=np.float32), rng.random((3, 48, 48, 1), dtype=np.float32)
    stacked = np.concatenate([g, i], axis=-1)
    logits = keras.Model(colour.inputs, colour.get_layer("gz2_logits").output)
    on_g = keras.Model(cnn1.inputs, cnn1.get_layer("gz2_logits").output)
    np.testing.assert_allclose(logits.predict(stacked, verbose=0), on_g.predict(g, verbose=0), rtol=1e-5, atol=1e-6)
    kernel, bias = colour.get_layer("conv1").get_weights()
    kernel[:, :, 1] = rng.normal(0, 0.3, kernel[:, :, 1].shape)  # once trained, the i channel counts
    colour.get_layer("conv1").set_weights([kernel, bias])
    other_i = np.concatenate([g, rng.random((3, 48, 48, 1), dtype=np.float32)], axis=-1)
    assert not np.allclose(logits.predict(stacked, verbose=0), logits.predict(other_i, verbose=0), atol=1e-4)
    with pytest.raises(ValueError, match="one-channel"):
        networks.build_colour_ml_network(networks.build_custom_cnn(48, channels=2, **options), options, 2)


def test_stacked_channels_are_augmented_and_turned_alike():
    """A two-channel batch: the same random rotation, zoom and flip in both channels, and under
    test-time symmetries the mean features of a colour network do not change when the galaxy turns."""
    rng = np.random.default_rng(4)
    plane = rng.random((48, 48)).astype(np.float32)
    stack = np.stack([plane, 2 * plane], axis=-1)
    moved = augment(stack, np.random.default_rng(5))
    assert moved.shape == (48, 48, 2) and not np.allclose(moved[..., 0], plane)
    np.testing.assert_allclose(moved[..., 1], 2 * moved[..., 0], rtol=1e-5, atol=1e-6)
    images = np.stack([stack, np.rot90(stack, 1, axes=(0, 1)), stack[:, ::-1]])
    rows = np.stack([np.arange(3), np.arange(3)], axis=1)  # (N, channels) rows, as stacked_rows gives them
    data = ImageBatches(lambda r: np.ascontiguousarray(images[np.asarray(r)[:, 0]]), rows, None, 3, augment=True, seed=1)
    (batch,) = data[0]
    assert batch.shape == (3, 48, 48, 2)
    np.testing.assert_allclose(batch[..., 1], 2 * batch[..., 0], rtol=1e-5, atol=1e-6)
    keras.utils.set_random_seed(0)
    options = {"width": 0.125, "dense_units": 16, "dropout": 0.0}
    colour = networks.build_colour_ml_network(networks.build_custom_cnn(48, **options), options, 2)
    kernel, bias = colour.get_layer("conv1").get_weights()
    kernel[:, :, 1] = rng.normal(0, 0.3, kernel[:, :, 1].shape)  # the i channel read too
    colour.get_layer("conv1").set_weights([kernel, bias])
    plain = ImageBatches(lambda r: np.ascontiguousarray(images[np.asarray(r)[:, 0]]), rows, None, 3)
    once = predict_layers(colour, ["gz2_logits"], plain)["gz2_logits"]
    eight = predict_layers(colour, ["gz2_logits"], plain, symmetries=8)["gz2_logits"]
    assert not np.allclose(once[0], once[1], rtol=1e-3, atol=1e-5)
    for k in (1, 2):
        np.testing.assert_allclose(eight[k], eight[0], rtol=1e-4, atol=1e-6)


def test_training_stops_early_when_the_validation_loss_stops_improving():
    """stop_patience: no better validation epoch in that many epochs ends training, the best one kept."""
    from pipeline.cnn.training import TrainingConfig, train

    keras.utils.set_random_seed(0)
    model = networks.build_custom_cnn(48, width=0.125, dense_units=8, dropout=0.0)
    images = np.random.default_rng(0).random((16, 48, 48), dtype=np.float32)
    targets = np.full((16, gz2.N_ANSWERS), 0.5, np.float32)
    data = ImageBatches(lambda rows: images[rows], np.arange(16), targets, 8)
    frozen = TrainingConfig(epochs=10, batch_size=8, learning_rate=0.0, stop_patience=2)  # nothing can improve
    result = train(model, data, data, frozen)
    assert len(result.history["val_loss"]) == 3 and result.best_epoch == 1  # the first, then 2 without gain
    everything = train(model, data, data, TrainingConfig(epochs=4, batch_size=8, learning_rate=0.0))
    assert len(everything.history["val_loss"]) == 4  # 0: no early stopping (the paper's 30 epochs)


def test_a_role_trains_with_the_presets_settings_and_what_its_role_training_changes():
    config = {"training": {"epochs": 20, "stop_patience": 6, "batch_size": 32}, "role_training": {"cnn4gi": {"epochs": 12}}}
    assert role_training(config, "cnn4gi") == {"epochs": 12, "stop_patience": 6, "batch_size": 32}
    assert role_training(config, "cnn1") == config["training"]
    assert role_training({"training": {"epochs": 3}}, "cnn2") == {"epochs": 3}  # no role_training at all
    fast = preset("fast")
    assert role_training(fast, "cnn4gi")["epochs"] < role_training(fast, "cnn1")["epochs"]


def test_weighted_l1_uses_the_error_floor():
    y_true = np.array([[2.0, 0.5], [4.0, 0.01]], np.float32)  # the second error is below 5% of 4.0 = 0.2
    y_pred = np.array([[3.0], [3.0]], np.float32)
    np.testing.assert_allclose(np.asarray(weighted_l1(y_true, y_pred)), [1.0 / 0.5, 1.0 / 0.2], rtol=1e-6)


def test_augmentation_rotates_zooms_and_flips_about_the_centre():
    image = np.zeros((49, 49), np.float32)
    image[24, 30] = 1.0  # a point 6 px right of the centre
    rng = np.random.default_rng(3)
    moved = [augment(image, rng) for _ in range(50)]
    radii = []
    for out in moved:
        y, x = np.unravel_index(np.argmax(out), out.shape)
        radii.append(np.hypot(x - 24, y - 24))
    assert 6 * 0.7 - 1.5 <= min(radii) and max(radii) <= 6 * 1.3 + 1.5  # zoom 0.7-1.3 about the centre
    assert len({(round(r), np.argmax(o)) for r, o in zip(radii, moved, strict=True)}) > 10  # many angles


def test_the_square_has_eight_distinct_symmetries_and_no_ninth():
    image = np.arange(16, dtype=np.float32).reshape(1, 4, 4)  # no symmetry of its own
    seen = {symmetry(image, k).tobytes() for k in range(8)}
    assert len(seen) == 8 and symmetry(image, 0).tobytes() == image.tobytes()
    np.testing.assert_array_equal(symmetry(image, 1)[0], np.rot90(image[0]))
    with pytest.raises(ValueError, match="8"):
        symmetry(image, 8)


def test_features_averaged_over_the_symmetries_do_not_change_when_the_galaxy_turns():
    keras.utils.set_random_seed(0)
    model = networks.build_custom_cnn(48, width=0.125, dense_units=16)
    image = np.random.default_rng(1).random((1, 48, 48)).astype(np.float32)
    turned = [image, np.rot90(image, 1, axes=(1, 2)), np.rot90(image, 3, axes=(1, 2)), image[:, :, ::-1]]
    variants = np.ascontiguousarray(np.concatenate(turned))
    data = ImageBatches(lambda rows: variants[rows], np.arange(len(variants)), None, 4)
    plain = predict_layers(model, ["gz2", "pool"], data)
    eight = predict_layers(model, ["gz2", "pool"], data, symmetries=8)
    four = predict_layers(model, ["gz2", "pool"], data, symmetries=4)
    for layer in ("gz2", "pool"):
        assert not np.allclose(plain[layer][0], plain[layer][1], rtol=1e-3, atol=1e-5)  # a turned galaxy reads differently
        for i in (1, 2, 3):  # quarter turns and a mirror image: the mean over all 8 is the same
            np.testing.assert_allclose(eight[layer][i], eight[layer][0], rtol=1e-4, atol=1e-6)
        for i in (1, 2):  # the four quarter turns suffice for turns, not for a mirror image
            np.testing.assert_allclose(four[layer][i], four[layer][0], rtol=1e-4, atol=1e-6)
    assert not np.allclose(four["pool"][3], four["pool"][0], rtol=1e-3, atol=1e-5)
    with pytest.raises(ValueError, match="1-8"):
        predict_layers(model, ["gz2"], data, symmetries=9)
    with pytest.raises(ValueError, match="feature extraction"):
        ImageBatches(lambda rows: variants[rows], np.arange(4), None, 4, augment=True).under_symmetry(1)


# --- the stages, through the Celery tasks --------------------------------------------


@pytest.fixture
def cnn_media(trained):
    """The shared trained survey: (survey, its cnn run, its features run, its media)."""
    return trained.survey, trained.runs["cnn"], trained.runs["features"], trained.media


@pytest.mark.django_db
def test_the_cnn_stage_trains_and_stores_all_five_networks(cnn_media):
    survey, run, _, _ = cnn_media
    run.refresh_from_db()
    assert run.status == "succeeded", run.message
    models = {m.name: m for m in TrainedModel.objects.filter(run=run)}
    assert set(models) == {"cnn1", "cnn2", "cnn3", "cnn4", "cnn4gi"}
    for role, model in models.items():
        assert model.preset == "test" and model.survey == survey and model.artifact.name.endswith(".keras")
        # the test preset's role_training gives CNN2 one epoch and CNN4 on colour eight, the others the preset's two
        epochs = {"cnn2": 1, "cnn4gi": 8}.get(role, 2)
        assert model.hyperparameters["training"]["epochs"] == epochs and model.hyperparameters["size"] == 48
        assert len(model.curves["loss"]) == len(model.curves["val_loss"]) == epochs
        assert model.metrics["n_train"] > 50 and 1 <= model.metrics["best_epoch"] <= epochs
        assert set(model.hyperparameters["feature_widths"]) == set(FEATURE_LAYERS[role])
        if role not in ("cnn4", "cnn4gi"):
            assert 0 < model.metrics["rmse"] < 0.5 and set(model.metrics["per_task"]) == {t.id for t in gz2.TASKS}
    # a working CNN4's features follow M/L (|Spearman| 0.53-0.81 over six simulated surveys)
    assert abs(models["cnn4"].metrics["best_feature_spearman"]) > 0.4
    # CNN4 on colour: CNN1's network on g and i, trained on the train galaxies with both images.
    colour = models["cnn4gi"]
    assert colour.hyperparameters["channels"] == ["g", "g-i"] and colour.hyperparameters["from"] == "cnn1"
    assert colour.hyperparameters["options"] == models["cnn1"].hyperparameters["options"]
    assert 0.9 * models["cnn4"].metrics["n_train"] <= colour.metrics["n_train"] <= models["cnn4"].metrics["n_train"]
    assert 0.8 * models["cnn4"].metrics["n_val"] <= colour.metrics["n_val"] <= models["cnn4"].metrics["n_val"]
    # CNN1-3 saw only galaxies with GZ2 votes; CNN4 every train galaxy with a target.
    with_votes = Galaxy.objects.filter(survey=survey, status="ok", split="train", gz2__isnull=False).count()
    assert models["cnn1"].metrics["n_train"] <= with_votes < models["cnn4"].metrics["n_train"]


@pytest.mark.django_db
def test_features_are_stored_for_every_galaxy_and_read_back_as_one_matrix(cnn_media):
    survey, _, run, _ = cnn_media
    run.refresh_from_db()
    assert run.status == "succeeded", run.message
    sets = {s.name: s for s in FeatureSet.objects.filter(run=run).order_by("name")}  # cnn1.gz2 first
    assert list(sets) == ["cnn1.gz2", "cnn1.pool", "cnn2.gz2", "cnn3.gz2", "cnn4.gz2_logits", "cnn4gi.gz2_logits"]
    colour = sets.pop("cnn4gi.gz2_logits")
    assert sets["cnn1.gz2"].feature_names[0] == "cnn1_custom.p_a01_smooth"
    assert sets["cnn1.pool"].feature_names[3] == "cnn1_custom.pool_0003"
    galaxies = list(Galaxy.objects.filter(survey=survey).exclude(status="rejected").order_by("id").values_list("id", flat=True))
    with_images = written_rows(survey, 48, galaxies)[1]
    assert run.items_done == len(with_images) > 150  # every split, with or without targets or votes
    assert FeatureVector.objects.filter(feature_set=sets["cnn1.gz2"]).count() == len(with_images)
    matrix, names = feature_matrix(list(sets.values()), with_images, drop=False)
    assert matrix.dtype == np.float32 and matrix.shape == (len(with_images), len(names))
    assert not np.isnan(matrix).any()
    probabilities = matrix[:, :37]
    np.testing.assert_allclose(probabilities[:, :3].sum(axis=1), 1.0, atol=1e-4)  # t01 is always asked
    # Dropped features (zero for every training galaxy) are recorded and left out on request.
    dropped = sum(len(s.dropped) for s in sets.values())
    assert run.result["feature_sets"]["cnn1.pool"]["dropped"] == len(sets["cnn1.pool"].dropped)
    assert feature_matrix(list(sets.values()), with_images)[0].shape[1] == len(names) - dropped
    # A galaxy without vectors reads as NaN, in the order asked.
    missing = Galaxy.objects.filter(survey=survey, status="rejected").first().pk
    both, _ = feature_matrix([sets["cnn3.gz2"]], [missing, int(with_images[0])])
    assert np.isnan(both[0]).all() and np.isfinite(both[1]).all()
    # CNN4 on colour's features: every galaxy with a g image and a g - i map, read through one stacked reader
    # (the map's NaN, where a band has no signal, read as 0).
    stores, coloured, rows = stacked_rows(survey, 48, with_images, ("g", "g-i"))
    with_i = set(Galaxy.objects.filter(pk__in=with_images, images__band="i", images__status="ok").values_list("pk", flat=True))
    assert set(coloured) <= with_i and len(coloured) >= 0.95 * len(with_i) and rows.shape == (len(coloured), 2)
    assert FeatureVector.objects.filter(feature_set=colour).count() == len(coloured)
    assert colour.feature_names[0] == "cnn4gi_custom.penultimate_00" and colour.symmetries == 8
    stacked = stacked_reader(stores)(rows[:5])
    np.testing.assert_array_equal(stacked[..., 0], row_reader(stores[0])(rows[:5, 0]))
    maps = row_reader(stores[1])(rows[:5, 1])
    assert np.isnan(maps).any() and np.isfinite(stacked).all()
    np.testing.assert_array_equal(stacked[..., 1], np.nan_to_num(maps, nan=0.0))


@pytest.mark.django_db
def test_a_saved_model_reloads_and_gives_identical_features(cnn_media):
    survey, _, run, _ = cnn_media
    model = TrainedModel.objects.get(pk=run.config["models"]["cnn1"])
    store, ids, rows = written_rows(survey, 48, Galaxy.objects.filter(survey=survey).values_list("id", flat=True))
    data = ImageBatches(row_reader(store), rows[:40], None, 16)
    fresh = keras.models.load_model(_local_copy(model.artifact), compile=False)
    sets = list(FeatureSet.objects.filter(run=run, name__in=["cnn1.gz2", "cnn1.pool"]).order_by("name"))
    assert {s.symmetries for s in sets} == {run.config["symmetries"]} == {8}  # the test preset's test-time augmentation
    again = predict_layers(fresh, ["gz2", "pool"], data, symmetries=8)
    stored, _ = feature_matrix(sets, ids[:40], drop=False)
    np.testing.assert_allclose(np.hstack([again["gz2"], again["pool"]]), stored, rtol=1e-5, atol=1e-6)
    assert load_keras_model(model.artifact.name) is load_keras_model(model.artifact.name)  # cached per process


def _local_copy(field_file) -> str:
    import tempfile

    handle = tempfile.NamedTemporaryFile(suffix=".keras", delete=False)
    with field_file.open("rb") as fh:
        handle.write(fh.read())
    handle.close()
    return handle.name


@pytest.mark.django_db
def test_stages_refuse_clearly_when_their_inputs_are_missing(synthetic_bundle):
    ingest_bundle(synthetic_bundle, "raw")
    survey = Survey.objects.get(name="raw")
    with pytest.raises(ValueError, match="no preprocessed images at 48 px"):
        start_stage("cnn", survey, preset_name="test")
    with pytest.raises(ValueError, match="no trained cnn1, cnn2, cnn3, cnn4"):
        start_stage("features", survey, preset_name="test")
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="run the cnn stage first"):
        call_command("run_pipeline", "--survey", "raw", "--preset", "test", "--stages", "features")
    assert not Run.objects.filter(survey=survey).exists()


@pytest.mark.django_db
def test_cancelling_a_cnn_run_stops_training_between_batches(cnn_media, monkeypatch):
    from catalogue.celery import app
    from catalogue.services import runs
    from catalogue.stages import cnn

    survey = cnn_media[0]
    app.conf.task_always_eager = False  # inside the test's transaction the chunk is never sent
    try:
        run = start_stage("cnn", survey, preset_name="test")
    finally:
        app.conf.task_always_eager = True
    checks = {"n": 0}
    real_check = runs.ChunkContext.check

    def cancel_on_fifth_batch(self, force=False):  # noqa: ARG001 - the real check's signature
        checks["n"] += 1
        if checks["n"] == 5:
            runs.cancel_run(run)
        return real_check(self, force=True)

    monkeypatch.setattr(runs.ChunkContext, "check", cancel_on_fifth_batch)
    assert runs.execute_chunk(run.chunks.get().pk, "test", cnn.HOOKS)["cancelled"]
    run.refresh_from_db()
    assert run.status == "cancelled" and checks["n"] == 5  # no batch ran after the cancellation
    assert not TrainedModel.objects.filter(run=run).exists()
    assert run.chunks.get().state == "cancelled"


@pytest.mark.django_db
def test_galaxy_page_shows_cnn1_probabilities_beside_the_votes(cnn_media, client):
    survey, _, run, _ = cnn_media
    galaxy = Galaxy.objects.filter(survey=survey, gz2__isnull=False, feature_vectors__feature_set__run=run).first()
    predicted = FeatureVector.objects.get(galaxy=galaxy, feature_set__run=run, feature_set__name="cnn1.gz2").values
    html = client.get(f"/galaxies/{galaxy.pk}/").content.decode()
    assert "CNN1" in html and "volunteers" in html
    top = int(np.argmax(galaxy.gz2.probabilities))  # listed first on the page
    assert f"{predicted[top]:.2f}" in html and f"{galaxy.gz2.probabilities[top]:.2f}" in html
    assert "has not been run" not in html

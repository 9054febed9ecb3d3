//! Every zoo model builds (shape inference only: no GPU) with the published parameter
//! counts, and names its parameters as torchvision does.

use wgtrain_models::zoo::{self, AlexNet};

#[test]
fn imagenet_parameter_counts_equal_torchvision() {
    let cases = [
        (
            zoo::alexnet(AlexNet::Paper, 1000, 224, 1).unwrap(),
            60_965_224,
        ),
        (
            zoo::alexnet(AlexNet::Torchvision, 1000, 224, 1).unwrap(),
            61_100_840,
        ),
        (zoo::resnet(18, 1000, 224, 1).unwrap(), 11_689_512),
        (zoo::resnet(34, 1000, 224, 1).unwrap(), 21_797_672),
        (zoo::resnet(50, 1000, 224, 1).unwrap(), 25_557_032),
        (zoo::resnet(101, 1000, 224, 1).unwrap(), 44_549_160),
        (zoo::resnet(152, 1000, 224, 1).unwrap(), 60_192_808),
    ];
    for (model, want) in cases {
        assert_eq!(model.graph.parameter_count(), want, "{}", model.name);
        assert_eq!(
            model.graph.ty(model.logits).shape,
            vec![1, 1000],
            "{}",
            model.name
        );
    }
}

#[test]
fn small_models_and_cifar_resnets_have_their_known_sizes() {
    // 784·15 + 15 + 15·10 + 10 and 784·128 + 128 + 128·10 + 10.
    assert_eq!(
        zoo::mlp([28, 28, 1], &[15], 10, 1)
            .unwrap()
            .graph
            .parameter_count(),
        11_935
    );
    assert_eq!(
        zoo::mlp([28, 28, 1], &[128], 10, 1)
            .unwrap()
            .graph
            .parameter_count(),
        101_770
    );
    // conv 16·25 + 16, conv 32·16·25 + 32, linear 512·10 + 10.
    assert_eq!(
        zoo::lenet5(10, 1).unwrap().graph.parameter_count(),
        416 + 12_832 + 5_130
    );
    // He et al. report 0.27M, 0.46M, 0.66M, 0.85M, 1.7M. Exactly, with option-A shortcuts
    // (no weights): conv1 3·16·9 + bn 2·16, per block 2·9·w² + 4·w (w = 16, 32, 64), the
    // first block of stages 2 and 3 with a 9·w/2·w first conv, and fc 64·10 + 10.
    for (depth, want) in [
        (20, 269_722),
        (32, 464_154),
        (44, 658_586),
        (56, 853_018),
        (110, 1_727_962),
    ] {
        let m = zoo::cifar_resnet(depth, 10, 1).unwrap();
        assert_eq!(m.graph.parameter_count(), want, "resnet{depth}");
    }
}

#[test]
fn parameter_names_follow_torchvision() {
    let m = zoo::resnet(50, 1000, 224, 1).unwrap();
    let names: Vec<&str> = m
        .graph
        .variables()
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    for name in [
        "conv1.weight",
        "bn1.running_var",
        "layer1.0.conv3.weight",
        "layer1.0.downsample.0.weight",
        "layer1.0.downsample.1.running_mean",
        "layer4.2.bn3.bias",
        "fc.weight",
        "fc.bias",
    ] {
        assert!(names.contains(&name), "missing {name}");
    }
    let a = zoo::alexnet(AlexNet::Torchvision, 1000, 224, 1).unwrap();
    let trainable: Vec<&str> = a
        .graph
        .variables()
        .iter()
        .filter(|v| v.trainable)
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(
        trainable,
        [
            "features.0.weight",
            "features.0.bias",
            "features.3.weight",
            "features.3.bias",
            "features.6.weight",
            "features.6.bias",
            "features.8.weight",
            "features.8.bias",
            "features.10.weight",
            "features.10.bias",
            "classifier.1.weight",
            "classifier.1.bias",
            "classifier.4.weight",
            "classifier.4.bias",
            "classifier.6.weight",
            "classifier.6.bias",
        ]
    );
}

#[test]
fn bad_depths_and_batches_are_errors() {
    assert!(
        zoo::resnet(19, 10, 224, 1)
            .unwrap_err()
            .to_string()
            .contains("18, 34, 50")
    );
    assert!(
        zoo::cifar_resnet(21, 10, 1)
            .unwrap_err()
            .to_string()
            .contains("6n+2")
    );
    assert!(zoo::lenet5(10, 0).is_err());
}

#[test]
fn textbook_sigmoid_mlp_matches_mlp_in_size_and_names() {
    let m = zoo::mlp_sigmoid_mse([28, 28, 1], &[15], 10, 10).unwrap();
    let relu = zoo::mlp([28, 28, 1], &[15], 10, 10).unwrap();
    assert_eq!(m.name, "mlp-sigmoid-mse-784-15-10");
    assert_eq!(relu.name, "mlp-784-15-10");
    assert_eq!(m.graph.parameter_count(), 11_935);
    let names = |m: &zoo::Model| -> Vec<String> {
        m.graph.variables().iter().map(|v| v.name.clone()).collect()
    };
    assert_eq!(
        names(&m),
        ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    );
    assert_eq!(names(&m), names(&relu));
    assert_eq!(m.graph.ty(m.logits).shape, vec![10, 10]);
    assert_eq!(m.graph.ty(m.correct).shape, vec![2]);
}

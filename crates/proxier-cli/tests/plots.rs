//! The charts in docs/img are drawn from docs/perf's benchmark results by `examples/plots`, not by hand:
//! regenerating them here must give the committed bytes.

#[path = "../examples/plots/charts.rs"]
mod charts;
#[path = "../examples/plots/svg.rs"]
mod svg;

use std::path::Path;

#[test]
fn committed_charts_are_what_the_benchmark_results_draw() {
    let repository = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let drawn = charts::render_all(&repository.join("docs/perf")).unwrap();
    assert_eq!(drawn.len(), 3);
    for (name, svg) in drawn {
        let committed = std::fs::read_to_string(repository.join("docs/img").join(name)).unwrap_or_default();
        assert!(
            committed == svg,
            "docs/img/{name} is not what docs/perf draws: run `cargo run -p proxier-cli --example plots`"
        );
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>\n") && svg.contains("<polyline"), "{name}");
    }
}

#[test]
fn every_point_of_the_data_is_drawn() {
    let csv = "# a comment\nseries,x,y\nA, b,1,2\nA, b,10,20\nc,1,5\n";
    let series = charts::read_series("t.csv", csv).unwrap();
    assert_eq!(series.len(), 2);
    assert_eq!(series[0].label, "A, b");
    assert_eq!(series[0].points, [(1.0, 2.0), (10.0, 20.0)]);
    let chart = svg::Chart {
        title: "t".into(),
        x: svg::Axis { label: "x".into(), log: true },
        y: svg::Axis { label: "y".into(), log: false },
        series,
    };
    let drawn = chart.to_svg();
    assert_eq!(drawn.matches("<circle").count(), 3);
    assert!(charts::read_series("t.csv", "series,x,y\nA,1,x\n").unwrap_err().contains("\"x\""));
}

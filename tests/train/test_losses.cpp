// model/ops/preference_loss.h against TRL's own loss code (TRL 1.16.0, and 0.28.0 for cDPO, rpo_alpha and
// bco_pair's running δ) and, for StaPO, torch autograd of our spec (tests/fixtures/train/losses.json, from
// dev/reference/make_loss_fixtures.py): per-pair losses, TRL's logged rewards, the gradient of the batch loss in
// S_w, S_l and the chosen prompt's P_w, the batch loss, and TRL's logged batch metrics through the trainer's
// metrics_json, in double (≤ 1e-6 relative); float finite at |z| = 100 and 1e4.
#include <cmath>
#include <nlohmann/json.hpp>

#include "common/cli.h"
#include "common/error.h"
#include "tests/test_util.h"
#include "train/loss_flags.h"
#include "model/ops/preference_loss.h"
#include "train/trainer.h"  // defines: MetricSums, metrics_json

namespace stapo {
namespace {

using nlohmann::json;

LossConfig config_from_json(const json& c) {
  LossConfig config = loss_defaults(loss_from_name(c.at("loss").get<std::string>()));
  config.reward = reward_from_name(c.at("reward").get<std::string>());
  config.beta = c.at("beta").get<double>();
  config.gamma = c.value("gamma", config.gamma);
  config.margin_left = c.value("margin_left", config.margin_left);
  config.margin_right = c.value("margin_right", config.margin_right);
  config.right_margin = right_margin_from_name(c.value("right_margin", std::string("absolute")));
  config.lambda_right = c.value("lambda_right", config.lambda_right);
  config.label_smoothing = c.value("label_smoothing", 0.0);
  config.alpha = c.value("alpha", 0.0);
  config.nll_span = nll_span_from_name(c.value("nll_span", std::string("response")));
  config.bco_delta = c.value("bco_delta", 0.0);
  return config;
}

// |out − ref| ≤ rtol·|ref| + atol, with atol far below anything the losses produce except cancellation to 0.
void expect_close(double out, double ref, const std::string& what, double rtol = 1e-6, double atol = 1e-12) {
  EXPECT_TRUE(std::isfinite(out)) << what;
  EXPECT_LE(std::fabs(out - ref), rtol * std::fabs(ref) + atol) << what << ": " << out << " vs " << ref;
}

template <typename T>
std::vector<PairLogps<T>> pairs_from_json(const json& p) {
  std::vector<PairLogps<T>> pairs(p.at("logp_chosen").size());
  for (size_t i = 0; i < pairs.size(); i++) {
    pairs[i] = {T(p["logp_chosen"][i].get<double>()), T(p["logp_rejected"][i].get<double>()),
                T(p["len_chosen"][i].get<double>()),  T(p["len_rejected"][i].get<double>()),
                T(p["ref_chosen"][i].get<double>()),  T(p["ref_rejected"][i].get<double>())};
    pairs[i].prompt_chosen = T(p["prompt_chosen"][i].get<double>());
    pairs[i].prompt_tokens_chosen = T(p["prompt_tokens_chosen"][i].get<double>());
  }
  return pairs;
}

// The trainer's normaliser (train/trainer.cpp step_scale): the NLL tokens of the whole batch.
double nll_weight_of(const std::vector<PairLogps<double>>& pairs, const LossConfig& config) {
  double tokens = 0;
  for (const PairLogps<double>& p : pairs)
    tokens += p.len_chosen + (config.nll_span == NllSpan::prompt_and_response ? p.prompt_tokens_chosen : 0.0);
  return double(pairs.size()) / tokens;
}

json fixture_cases() {
  json fixture = test::json_fixture("train/losses.json", 3);
  EXPECT_EQ(fixture["trl"]["current"], "1.16.0");
  EXPECT_EQ(fixture["trl"]["0.28"], "0.28.0");
  return fixture["cases"];
}

TEST(Losses, MatchTrlAndAutogradInDouble) {
  const json cases = fixture_cases();
  ASSERT_GE(cases.size(), 84u);
  for (const json& c : cases) {
    const std::string name = c["name"];
    SCOPED_TRACE(name + " (" + c["source"].get<std::string>() + ")");
    LossConfig config = config_from_json(c["config"]);
    loss_config_validate(config, true);
    const auto pairs = pairs_from_json<double>(c["pairs"]);
    const json& e = c["expected"];
    const double B = double(pairs.size());
    const double nll_weight = nll_weight_of(pairs, config);
    MetricSums sums;
    for (size_t i = 0; i < pairs.size(); i++) {
      PairLoss<double> full = loss_pair(config, pairs[i], nll_weight);
      const std::string at = name + " pair " + std::to_string(i);
      if (e.contains("pair_losses"))  // TRL's per-pair `losses`: the preference term alone
        expect_close(loss_pair(config, pairs[i], 0.0).loss, e["pair_losses"][i], at + " loss");
      if (e.contains("delta")) expect_close(full.delta, e["delta"][i], at + " delta");
      expect_close(full.reward_chosen, e["rewards_chosen"][i], at + " rewards/chosen");
      expect_close(full.reward_rejected, e["rewards_rejected"][i], at + " rewards/rejected");
      expect_close(full.dloss_dlogp_chosen / B, e["grad_logp_chosen"][i], at + " dL/dS_w");
      expect_close(full.dloss_dlogp_rejected / B, e["grad_logp_rejected"][i], at + " dL/dS_l");
      expect_close(full.dloss_dlogp_prompt / B, e["grad_prompt_chosen"][i], at + " dL/dP_w");
      PairResult r;
      r.logps = pairs[i];
      r.loss = full;
      sums.add(r, config);
    }
    // The batch loss as the trainer logs it (MetricSums::loss), and TRL's logged metrics as metrics_json names
    // them. TRL's CPO (simpo) and ORPO log average log-probs as logps/*, exactly when our reward is avg; ours
    // are the sums of the DPOTrainer for every loss (docs/stapo-loss.md), so those two are skipped there.
    expect_close(sums.loss(config), e["batch_loss"], name + " batch loss");
    if (!e.contains("metrics")) continue;
    const json ours = metrics_json(sums, config, "");
    for (const auto& [key, value] : e["metrics"].items()) {
      if (key.rfind("logps/", 0) == 0 && config.reward == RewardKind::avg) continue;
      if (!ours.contains(key)) continue;  // logits/*, nll_loss, log_odds_*: TRL's, not logged here
      expect_close(ours[key].get<double>(), value.get<double>(), name + " metric " + key, 1e-6, 1e-9);
    }
    for (const char* key : {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"})
      EXPECT_TRUE(e["metrics"].contains(key)) << name << " " << key;
  }
}

// bco_pair's δ: TRL 0.28's RunningMoments over four batches of one trainer, one update per batch from the mean
// of its rewards. TRL keeps δ in float32 (its RunningMoments casts), hence 1e-6.
TEST(Losses, BcoRunningMeanMatchesTrl) {
  RunningMean delta;
  int steps = 0;
  for (const json& c : fixture_cases()) {
    const std::string name = c["name"];
    if (name.rfind("bco_pair/step", 0) != 0) continue;
    LossConfig config = config_from_json(c["config"]);
    double rewards = 0;
    const auto pairs = pairs_from_json<double>(c["pairs"]);
    for (const PairLogps<double>& p : pairs) {
      const PairLoss<double> l = loss_pair(config, p, 0.0);
      rewards += l.reward_chosen + l.reward_rejected;
    }
    delta.add(rewards / (2.0 * double(pairs.size())));
    expect_close(delta.mean, c["expected"]["bco_delta"], name + " delta", 1e-6, 1e-7);
    steps++;
  }
  EXPECT_EQ(steps, 4);
  EXPECT_EQ(delta.count, 4);
}

// ORPO's NLL over the response only (--nll-span response): TRL's odds-ratio term unchanged, the prompt out of
// the NLL and of the gradient.
TEST(Losses, OrpoNllSpanResponseLeavesThePromptOut) {
  LossConfig full = loss_defaults(LossKind::orpo), response = full;
  ASSERT_EQ(full.nll_span, NllSpan::prompt_and_response);
  response.nll_span = NllSpan::response;
  PairLogps<double> p{-30.0, -50.0, 12.0, 20.0, 0.0, 0.0};
  p.prompt_chosen = -14.0;
  p.prompt_tokens_chosen = 6.0;
  const PairLoss<double> a = loss_pair(full, p, 0.1), b = loss_pair(response, p, 0.1);
  EXPECT_EQ(a.preference, b.preference);
  EXPECT_NEAR(a.loss - b.loss, full.alpha * 14.0 * 0.1, 1e-12);
  EXPECT_EQ(a.dloss_dlogp_chosen, b.dloss_dlogp_chosen);
  EXPECT_NEAR(a.dloss_dlogp_prompt, -full.alpha * 0.1, 1e-15);
  EXPECT_EQ(b.dloss_dlogp_prompt, 0.0);
  EXPECT_TRUE(loss_uses_prompt(full));
  EXPECT_FALSE(loss_uses_prompt(response));
}

// Float (the GPU's type) at the extremes: finite everywhere, and close to double.
TEST(Losses, FloatFiniteAndCloseAtExtremes) {
  for (const json& c : fixture_cases()) {
    const std::string name = c["name"];
    LossConfig config = config_from_json(c["config"]);
    auto pf = pairs_from_json<float>(c["pairs"]);
    auto pd = pairs_from_json<double>(c["pairs"]);
    for (size_t i = 0; i < pf.size(); i++) {
      PairLoss<float> f = loss_pair(config, pf[i], 0.01f);
      PairLoss<double> d = loss_pair(config, pd[i], 0.01);
      const float values[] = {f.loss, f.z, f.dloss_dz, f.dloss_dlogp_chosen, f.dloss_dlogp_rejected,
                              f.dloss_dlogp_prompt};
      for (float v : values) ASSERT_TRUE(std::isfinite(v)) << name << " pair " << i;
      // float inputs carry ~1e-7 relative rounding of S (values up to ~1e4): compare loosely
      EXPECT_LE(std::fabs(f.loss - d.loss), 1e-3 * (1 + std::fabs(d.loss))) << name << " pair " << i;
      EXPECT_LE(std::fabs(f.dloss_dlogp_chosen - d.dloss_dlogp_chosen), 1e-3 * (1 + std::fabs(d.dloss_dlogp_chosen)))
          << name << " pair " << i;
    }
  }
}

// Far beyond the fixtures: |z| = 1e4 stays finite, with the asymptotic slopes.
TEST(Losses, AsymptoticSlopesWithoutOverflow) {
  for (double z : {-1e4, 1e4}) {
    PairLogps<float> p{float(z / 2.0), 0.f, 1.f, 1.f, 0.f, 0.f};  // avg reward, β = 2: z = 2·S_w
    LossConfig stapo = loss_defaults(LossKind::stapo_sigmoid);
    PairLoss<float> s = loss_pair(stapo, p, 0.f);
    ASSERT_TRUE(std::isfinite(s.loss) && std::isfinite(s.dloss_dz));
    EXPECT_FLOAT_EQ(s.dloss_dz, z < 0 ? -1.f : 1.f);  // pulled back into the band from both sides
    LossConfig simpo = loss_defaults(LossKind::simpo);
    PairLoss<float> o = loss_pair(simpo, p, 0.f);
    ASSERT_TRUE(std::isfinite(o.loss));
    EXPECT_FLOAT_EQ(o.dloss_dz, z < 0 ? -1.f : 0.f);  // one-sided: no force above
  }
}

// Every loss, in float, with each reward β·u_w, β·u_l at ±1e4 (its default reward; those without a
// reference on S alone): loss and gradients finite.
TEST(Losses, EveryLossFiniteFarOut) {
  for (const std::string& name : loss_names()) {
    const LossConfig c = loss_defaults(loss_from_name(name));
    for (float r_w : {-1e4f, 1e4f})
      for (float r_l : {-1e4f, 1e4f}) {
        const float s = float(1.0 / c.beta);  // u = r/β; avg rewards divide S by |y| = 1
        PairLogps<float> p{r_w * s, r_l * s, 1.f, 1.f, 0.f, 0.f};
        if (name == "orpo") p = {-std::fabs(r_w) * s, -std::fabs(r_l) * s, 1.f, 1.f, 0.f, 0.f};  // A < 0
        p.prompt_chosen = -3.f;
        const PairLoss<float> l = loss_pair(c, p, 0.5f);
        EXPECT_TRUE(std::isfinite(l.loss) && std::isfinite(l.dloss_dlogp_chosen) &&
                    std::isfinite(l.dloss_dlogp_rejected) && std::isfinite(l.dloss_dlogp_prompt))
            << name << " at β·u " << r_w << ", " << r_l;
      }
  }
}

TEST(Losses, OrpoFiniteAtCertainty) {
  LossConfig c = loss_defaults(LossKind::orpo);
  for (float s_w : {0.0f, -1e-9f}) {
    PairLoss<float> out = loss_pair(c, PairLogps<float>{s_w, -3.0f, 4.f, 2.f, 0.f, 0.f}, 0.25f);
    EXPECT_TRUE(std::isfinite(out.loss) && std::isfinite(out.dloss_dlogp_chosen) &&
                std::isfinite(out.dloss_dlogp_rejected));
  }
}

// Margins in Δ units: for λR = 1 the sigmoid form's gradient vanishes at the band's midpoint (m_l + m_r)/2,
// pushes Δ up below it and down above it.
TEST(Losses, StapoStationaryAtBandCentre) {
  LossConfig c = loss_defaults(LossKind::stapo_sigmoid);
  c.margin_left = 0.35;
  c.margin_right = 2.05;
  const double centre = (c.margin_left + c.margin_right) / 2;
  // avg reward with A_l = −2: Δ = A_w + 2
  const auto at_delta = [&](double delta) { return PairLogps<double>{(delta - 2.0) * 13.0, -18.0, 13.0, 9.0, 0, 0}; };
  const PairLoss<double> out = loss_pair(c, at_delta(centre), 0.0);
  EXPECT_NEAR(out.delta, centre, 1e-12);
  EXPECT_NEAR(out.z, c.beta * centre, 1e-12);
  EXPECT_NEAR(out.dloss_dz, 0.0, 1e-12);
  EXPECT_GT(loss_pair(c, at_delta(centre + 0.3), 0.0).dloss_dz, 0.0);  // above the midpoint: pushed down
  const PairLoss<double> below = loss_pair(c, at_delta(centre - 0.3), 0.0);
  EXPECT_LT(below.dloss_dz, 0.0);  // below: pushed up
}

// saturate: as absolute at or below m_r, flat above it (no push up, no push back), for both forms.
TEST(Losses, SaturateIsFlatAboveTheRightMarginOnly) {
  for (LossKind kind : {LossKind::stapo_sigmoid, LossKind::stapo_hinge}) {
    LossConfig absolute = loss_defaults(kind), saturate = absolute;
    saturate.right_margin = RightMargin::saturate;
    for (double delta : {-3.0, 0.1, 0.55, 0.69, 0.71, 2.0, 40.0}) {
      const PairLogps<double> p{delta * 5.0, 0.0, 5.0, 4.0, 0.0, 0.0};  // avg: Δ = S_w/5
      const PairLoss<double> a = loss_pair(absolute, p, 0.0), s = loss_pair(saturate, p, 0.0);
      if (delta <= absolute.margin_right) {
        EXPECT_EQ(s.loss, a.loss) << loss_name(kind) << " Δ " << delta;
        EXPECT_EQ(s.dloss_dz, a.dloss_dz) << loss_name(kind) << " Δ " << delta;
      } else {
        EXPECT_EQ(s.dloss_dz, 0.0) << loss_name(kind) << " Δ " << delta;
        EXPECT_EQ(s.dloss_dlogp_chosen, 0.0) << loss_name(kind) << " Δ " << delta;
        EXPECT_GT(a.dloss_dz, 0.0) << loss_name(kind) << " Δ " << delta;  // absolute pushes back
        const PairLogps<double> at{absolute.margin_right * 5.0, 0.0, 5.0, 4.0, 0.0, 0.0};
        EXPECT_NEAR(s.loss, loss_pair(absolute, at, 0.0).loss, 1e-12) << "continuous at m_r";
      }
      EXPECT_NEAR(s.delta, delta, 1e-12);
    }
  }
}

std::string validate_error(const LossConfig& c, bool have_reference) {
  try {
    loss_config_validate(c, have_reference);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Losses, ValidationNamesTheFlag) {
  LossConfig c = loss_defaults(LossKind::stapo_sigmoid);
  EXPECT_EQ(validate_error(c, false), "");
  c.margin_right = c.margin_left;
  EXPECT_NE(validate_error(c, false).find("--margin-right"), std::string::npos);
  c.margin_right = c.margin_left - 0.1;
  EXPECT_NE(validate_error(c, false).find("--margin-right"), std::string::npos);
  c = loss_defaults(LossKind::stapo_hinge);
  c.beta = 0.0;
  EXPECT_NE(validate_error(c, false).find("--beta"), std::string::npos);
  c.beta = -1.0;
  EXPECT_NE(validate_error(c, false).find("--beta"), std::string::npos);
  c = loss_defaults(LossKind::dpo);  // sum-ref
  EXPECT_NE(validate_error(c, false).find("--ref precompute"), std::string::npos);
  EXPECT_EQ(validate_error(c, true), "");
  c = loss_defaults(LossKind::ipo);  // avg-ref
  EXPECT_NE(validate_error(c, false).find("avg-ref"), std::string::npos);
  c = loss_defaults(LossKind::dpo);
  c.label_smoothing = 0.1;  // TRL >= 0.29's dpo has none: cdpo is TRL <= 0.28's
  EXPECT_NE(validate_error(c, true).find("--loss cdpo"), std::string::npos);
  c.loss = LossKind::cdpo;
  EXPECT_EQ(validate_error(c, true), "");
  c = loss_defaults(LossKind::hinge);
  c.label_smoothing = 0.1;  // would be ignored
  EXPECT_NE(validate_error(c, true).find("--label-smoothing"), std::string::npos);
  c = loss_defaults(LossKind::exo_pair);
  c.label_smoothing = 0.0;  // log ε
  EXPECT_NE(validate_error(c, true).find("--label-smoothing > 0"), std::string::npos);
  c = loss_defaults(LossKind::apo_zero);
  c.reward = RewardKind::avg;  // a loss of the log-ratios against the reference
  EXPECT_NE(validate_error(c, true).find("--reward sum-ref"), std::string::npos);
  c = loss_defaults(LossKind::bco_pair);
  c.reward = RewardKind::avg_ref;
  EXPECT_NE(validate_error(c, true).find("bco_pair needs --reward sum-ref"), std::string::npos);
  EXPECT_THROW(loss_from_name("dpo2"), Error);
  EXPECT_THROW(nll_span_from_name("prompt"), Error);
  for (const std::string& name : loss_names())  // every name round-trips and its defaults validate
    if (name != "stapo") {
      EXPECT_EQ(loss_name(loss_from_name(name)), name);
      EXPECT_EQ(validate_error(loss_defaults(loss_from_name(name)), true), "") << name;
    }
  EXPECT_THROW(right_margin_from_name("clip"), Error);
  EXPECT_EQ(loss_from_name("stapo"), LossKind::stapo_sigmoid);
}

}  // namespace
}  // namespace stapo

namespace stapo {
namespace {

// The loss flags as the trainers and score parse them: a setting the spec rejects is a bad flag (exit 2, the
// flag named), as CLI11's own checks.
int parse_loss_flags(const std::vector<std::string>& args, std::string* err) {
  CLI::App app{"test"};
  app.name("test");
  LossFlags flags;
  loss_flags_add(app, flags);
  std::vector<std::string> argv_storage = {"test"};
  argv_storage.insert(argv_storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_storage) argv.push_back(a.data());
  testing::internal::CaptureStderr();
  const int code = parse_cli(app, int(argv.size()), argv.data());
  *err = testing::internal::GetCapturedStderr();
  return code;
}

TEST(LossFlags, AblationsThatBreakTheSpecExitTwoNamingTheFlag) {
  std::string err;
  EXPECT_EQ(parse_loss_flags({"--loss", "stapo", "--margin-left", "0.5", "--margin-right", "0.7"}, &err), -1) << err;
  EXPECT_EQ(parse_loss_flags({"--margin-left", "0.7", "--margin-right", "0.7"}, &err), 2);
  EXPECT_NE(err.find("--margin-right"), std::string::npos) << err;
  EXPECT_EQ(parse_loss_flags({"--margin-right", "0.3"}, &err), 2);  // below the default m_l = 0.5
  EXPECT_NE(err.find("--margin-right"), std::string::npos) << err;
  EXPECT_EQ(parse_loss_flags({"--right-margin", "clip"}, &err), 2);
  EXPECT_NE(err.find("--right-margin"), std::string::npos) << err;
  EXPECT_EQ(parse_loss_flags({"--loss", "stapo", "--right-margin", "saturate"}, &err), -1) << err;
  EXPECT_EQ(parse_loss_flags({"--beta", "0"}, &err), 2);
  EXPECT_NE(err.find("--beta"), std::string::npos) << err;
}

}  // namespace
}  // namespace stapo

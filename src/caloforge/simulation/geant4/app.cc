// caloforge's Geant4 application: a layered sampling calorimeter, a particle gun, cell energies.
//
// Built by caloforge.simulation.geant4.build into a shared library and driven through the
// small C API at the bottom (ctypes). One calorimeter per process: Geant4's run manager is a
// process-wide singleton, so caloforge runs this library in worker processes.
//
// Axes follow caloforge's geometry convention: x and y across the face, z = depth from the
// front face (z = 0). Every layer is an absorber plate followed by a sensor plate; both are
// wide slabs (the cell grid is a readout of the sensor plates, not separate volumes), so a
// shower near the grid's edge leaks out of the image but not out of the material.
//
// Compiled with -DCF_BENCH_MAIN it is also a standalone executable: the same application and
// event loop with no Python at all, for benchmarks/geant4_engine.py.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "CLHEP/Random/MixMaxRng.h"
#include "CLHEP/Random/Random.h"
#include "G4Box.hh"
#include "G4EmParameters.hh"
#include "G4EmStandardPhysics.hh"
#include "G4EmStandardPhysics_option1.hh"
#include "G4EmStandardPhysics_option2.hh"
#include "G4EmStandardPhysics_option3.hh"
#include "G4EmStandardPhysics_option4.hh"
#include "G4Event.hh"
#include "G4Exception.hh"
#include "G4LogicalVolume.hh"
#include "G4NistManager.hh"
#include "G4PVPlacement.hh"
#include "G4ParticleGun.hh"
#include "G4ParticleTable.hh"
#include "G4PhysListFactory.hh"
#include "G4PhysicsListHelper.hh"
#include "G4RunManager.hh"
#include "G4SDManager.hh"
#include "G4StateManager.hh"
#include "G4Step.hh"
#include "G4PhysicalConstants.hh"
#include "G4SystemOfUnits.hh"
#include "G4Track.hh"
#include "G4UImanager.hh"
#include "G4UIsession.hh"
#include "G4UserEventAction.hh"
#include "G4UserSteppingAction.hh"
#include "G4VExceptionHandler.hh"
#include "G4VModularPhysicsList.hh"
#include "G4VPhysicsConstructor.hh"
#include "G4VSensitiveDetector.hh"
#include "G4VUserDetectorConstruction.hh"
#include "G4VUserPrimaryGeneratorAction.hh"
#include "G4Version.hh"

// Particles and the processes of the data-free list.
#include "G4ComptonScattering.hh"
#include "G4CoulombScattering.hh"
#include "G4Electron.hh"
#include "G4EmBuilder.hh"
#include "G4GammaConversion.hh"
#include "G4Gamma.hh"
#include "G4GenericIon.hh"
#include "G4KleinNishinaCompton.hh"
#include "G4PEEffectFluoModel.hh"
#include "G4PairProductionRelModel.hh"
#include "G4PhotoElectricEffect.hh"
#include "G4Positron.hh"
#include "G4UrbanMscModel.hh"
#include "G4WentzelVIModel.hh"
#include "G4eBremsstrahlung.hh"
#include "G4eBremsstrahlungRelModel.hh"
#include "G4eCoulombScatteringModel.hh"
#include "G4eIonisation.hh"
#include "G4eMultipleScattering.hh"
#include "G4eplusAnnihilation.hh"
#include "G4hMultipleScattering.hh"
#include "G4ionIonisation.hh"

namespace {

// --- messages ---------------------------------------------------------------------------
// Geant4 talks a lot on G4cout. The session swallows it and keeps the error stream, so that
// a failure can be reported to Python with Geant4's own words.
class QuietSession : public G4UIsession {
 public:
  G4int ReceiveG4cout(const G4String&) override { return 0; }
  G4int ReceiveG4cerr(const G4String& text) override {
    errors += text;
    if (errors.size() > 8000) errors.erase(0, errors.size() - 8000);
    return 0;
  }
  std::string errors;
};

// A fatal G4Exception would abort the process; it becomes a C++ exception instead, caught at
// the C API below and handed to Python as text. Warnings are kept for the same report.
class ThrowingHandler : public G4VExceptionHandler {
 public:
  G4bool Notify(const char* origin, const char* code, G4ExceptionSeverity severity,
                const char* description) override {
    std::string text = std::string(code) + " in " + origin + ": " + description;
    if (severity == FatalException || severity == FatalErrorInArgument ||
        severity == RunMustBeAborted || severity == EventMustBeAborted) {
      throw std::runtime_error("Geant4 " + text);
    }
    warnings = text;
    return false;
  }
  std::string warnings;
};

// --- configuration ------------------------------------------------------------------------
struct Config {
  std::vector<std::string> absorber, sensor;  // NIST material names (G4_W, ...)
  std::vector<double> absorber_mm, sensor_mm;
  int nx = 0, ny = 0;
  double cell_x_mm = 0, cell_y_mm = 0;
  bool summed = false;        // depth-summed readout: one image plane
  bool barycentre = false;    // centre each image on its shower's barycentre
  double half_width_mm = 0;   // lateral half size of the slabs
  double range_cut_mm = 0.7;  // production threshold
  std::string physics = "data-free";
};

// --- physics --------------------------------------------------------------------------------
// Geant4's option-0 electromagnetic list with each data-driven model replaced by one that
// needs no data file: Seltzer-Berger bremsstrahlung by the relativistic model at all
// energies, the 5D conversion model by the relativistic pair model, no Rayleigh scattering,
// photo-electric effect from the built-in Sandia parametrisation, no fluorescence.
class DataFreeEmPhysics : public G4VPhysicsConstructor {
 public:
  DataFreeEmPhysics() : G4VPhysicsConstructor("caloforge data-free EM") {
    G4EmParameters* p = G4EmParameters::Instance();
    p->SetDefaults();
    p->SetFluo(false);
    p->SetAuger(false);
    p->SetPixe(false);
    p->SetGeneralProcessActive(false);
  }

  void ConstructParticle() override { G4EmBuilder::ConstructMinimalEmSet(); }

  void ConstructProcess() override {
    G4PhysicsListHelper* helper = G4PhysicsListHelper::GetPhysicsListHelper();
    const G4double msc_limit = 100 * MeV;  // Urban below, Wentzel-VI + single scattering above

    G4ParticleDefinition* gamma = G4Gamma::Gamma();
    auto* photo = new G4PhotoElectricEffect();
    photo->SetEmModel(new G4PEEffectFluoModel());
    auto* compton = new G4ComptonScattering();
    compton->SetEmModel(new G4KleinNishinaCompton());
    auto* conversion = new G4GammaConversion();
    conversion->SetEmModel(new G4PairProductionRelModel());  // below 80 GeV
    conversion->SetEmModel(new G4PairProductionRelModel(), 1);  // above
    helper->RegisterProcess(photo, gamma);
    helper->RegisterProcess(compton, gamma);
    helper->RegisterProcess(conversion, gamma);

    G4ParticleDefinition* leptons[] = {G4Electron::Electron(), G4Positron::Positron()};
    for (G4ParticleDefinition* lepton : leptons) {
      auto* msc = new G4eMultipleScattering();
      auto* urban = new G4UrbanMscModel();
      urban->SetHighEnergyLimit(msc_limit);
      auto* wentzel = new G4WentzelVIModel();
      wentzel->SetLowEnergyLimit(msc_limit);
      msc->SetEmModel(urban);
      msc->SetEmModel(wentzel);
      auto* single = new G4CoulombScattering();
      auto* single_model = new G4eCoulombScatteringModel();
      single_model->SetActivationLowEnergyLimit(msc_limit);
      single->SetEmModel(single_model);
      single->SetMinKinEnergy(msc_limit);
      auto* brem = new G4eBremsstrahlung();
      brem->SetEmModel(new G4eBremsstrahlungRelModel());     // below 1 GeV
      brem->SetEmModel(new G4eBremsstrahlungRelModel(), 1);  // above
      helper->RegisterProcess(msc, lepton);
      helper->RegisterProcess(new G4eIonisation(), lepton);
      helper->RegisterProcess(brem, lepton);
      helper->RegisterProcess(single, lepton);
      if (lepton == G4Positron::Positron()) {
        helper->RegisterProcess(new G4eplusAnnihilation(), lepton);
      }
    }
    // Single Coulomb scattering makes recoil ions: they need processes of their own.
    G4ParticleDefinition* ion = G4GenericIon::GenericIon();
    helper->RegisterProcess(new G4hMultipleScattering("ionmsc"), ion);
    helper->RegisterProcess(new G4ionIonisation(), ion);
  }
};

G4VModularPhysicsList* make_physics(const std::string& name) {
  G4VModularPhysicsList* list = nullptr;
  if (name == "data-free") {
    list = new G4VModularPhysicsList();
    list->RegisterPhysics(new DataFreeEmPhysics());
  } else if (name.rfind("em-standard", 0) == 0) {
    list = new G4VModularPhysicsList();
    if (name == "em-standard" || name == "em-standard-opt0") {
      list->RegisterPhysics(new G4EmStandardPhysics());
    } else if (name == "em-standard-opt1") {
      list->RegisterPhysics(new G4EmStandardPhysics_option1());
    } else if (name == "em-standard-opt2") {
      list->RegisterPhysics(new G4EmStandardPhysics_option2());
    } else if (name == "em-standard-opt3") {
      list->RegisterPhysics(new G4EmStandardPhysics_option3());
    } else if (name == "em-standard-opt4") {
      list->RegisterPhysics(new G4EmStandardPhysics_option4());
    } else {
      delete list;
      throw std::invalid_argument("unknown physics list '" + name + "'");
    }
  } else {
    G4PhysListFactory factory;
    factory.SetVerbose(0);
    if (!factory.IsReferencePhysList(name)) {
      throw std::invalid_argument("unknown physics list '" + name +
                                  "' (not a Geant4 reference physics list)");
    }
    list = factory.GetReferencePhysList(name);
  }
  list->SetVerboseLevel(0);
  return list;
}

// --- per-event tallies ------------------------------------------------------------------
struct Deposit {
  float x, y;  // mm, at the middle of the step
  int layer;
  float energy;  // MeV
};

struct Tally {
  std::vector<Deposit> sensor_hits;
  double sensor = 0, absorber = 0, leakage = 0;  // MeV
  double sum_ex = 0, sum_ey = 0;                 // sensor-energy-weighted positions

  void clear() {
    sensor_hits.clear();
    sensor = absorber = leakage = sum_ex = sum_ey = 0;
  }
};

// The sensor plates' sensitive detector: keeps every deposit with its position; the cells
// are filled at the end of the event, once the image's centre is known.
class CellReadout : public G4VSensitiveDetector {
 public:
  CellReadout(Tally* tally) : G4VSensitiveDetector("caloforge_cells"), tally_(tally) {}

  G4bool ProcessHits(G4Step* step, G4TouchableHistory*) override {
    const G4double e = step->GetTotalEnergyDeposit();
    if (e <= 0) return false;
    const G4ThreeVector mid =
        0.5 * (step->GetPreStepPoint()->GetPosition() + step->GetPostStepPoint()->GetPosition());
    const int layer = step->GetPreStepPoint()->GetTouchable()->GetCopyNumber();
    tally_->sensor_hits.push_back({float(mid.x()), float(mid.y()), layer, float(e)});
    tally_->sensor += e;
    tally_->sum_ex += e * mid.x();
    tally_->sum_ey += e * mid.y();
    return true;
  }

 private:
  Tally* tally_;
};

// --- geometry -------------------------------------------------------------------------------
class Calorimeter : public G4VUserDetectorConstruction {
 public:
  Calorimeter(const Config& config, Tally* tally) : config_(config), tally_(tally) {}

  G4VPhysicalVolume* Construct() override {
    G4NistManager* nist = G4NistManager::Instance();
    G4Material* vacuum = nist->FindOrBuildMaterial("G4_Galactic");
    double depth = 0;
    for (size_t i = 0; i < config_.sensor.size(); ++i) {
      depth += config_.absorber_mm[i] + config_.sensor_mm[i];
    }
    const double half = config_.half_width_mm * mm;
    auto* world_box = new G4Box("World", 1.1 * half, 1.1 * half, depth * mm + 10 * mm);
    auto* world_lv = new G4LogicalVolume(world_box, vacuum, "World");
    world_ = new G4PVPlacement(nullptr, {}, world_lv, "World", nullptr, false, 0);

    // A vacuum mother volume holding the layers, front face at z = 0.
    auto* calo_box = new G4Box("Calorimeter", half, half, 0.5 * depth * mm);
    auto* calo_lv = new G4LogicalVolume(calo_box, vacuum, "Calorimeter");
    new G4PVPlacement(nullptr, G4ThreeVector(0, 0, 0.5 * depth * mm), calo_lv, "Calorimeter",
                      world_lv, false, 0);

    // One logical volume per distinct plate; copy number = layer index.
    sensor_lvs_.clear();
    double z = -0.5 * depth;
    for (size_t i = 0; i < config_.sensor.size(); ++i) {
      if (config_.absorber_mm[i] > 0) {
        G4LogicalVolume* lv = plate(config_.absorber[i], config_.absorber_mm[i], false);
        new G4PVPlacement(nullptr, G4ThreeVector(0, 0, (z + 0.5 * config_.absorber_mm[i]) * mm),
                          lv, "Absorber", calo_lv, false, int(i));
        z += config_.absorber_mm[i];
      }
      G4LogicalVolume* lv = plate(config_.sensor[i], config_.sensor_mm[i], true);
      new G4PVPlacement(nullptr, G4ThreeVector(0, 0, (z + 0.5 * config_.sensor_mm[i]) * mm), lv,
                        "Sensor", calo_lv, false, int(i));
      z += config_.sensor_mm[i];
    }
    return world_;
  }

  void ConstructSDandField() override {
    auto* readout = new CellReadout(tally_);
    G4SDManager::GetSDMpointer()->AddNewDetector(readout);
    for (G4LogicalVolume* lv : sensor_lvs_) lv->SetSensitiveDetector(readout);
  }

  const G4VPhysicalVolume* world() const { return world_; }
  const std::vector<G4LogicalVolume*>& absorbers() const { return absorber_lvs_; }

 private:
  G4LogicalVolume* plate(const std::string& material, double thickness_mm, bool sensor) {
    const std::string key = material + "/" + std::to_string(thickness_mm) + (sensor ? "/s" : "/a");
    for (auto& [k, lv] : plates_) {
      if (k == key) return lv;
    }
    G4Material* m = G4NistManager::Instance()->FindOrBuildMaterial(material, false);
    if (m == nullptr) {
      throw std::invalid_argument("material '" + material +
                                  "' is not in Geant4's NIST material database");
    }
    const double half = config_.half_width_mm * mm;
    auto* box = new G4Box(key, half, half, 0.5 * thickness_mm * mm);
    auto* lv = new G4LogicalVolume(box, m, key);
    plates_.emplace_back(key, lv);
    if (sensor) {
      sensor_lvs_.push_back(lv);
    } else {
      absorber_lvs_.push_back(lv);
    }
    return lv;
  }

  Config config_;
  Tally* tally_;
  G4VPhysicalVolume* world_ = nullptr;
  std::vector<std::pair<std::string, G4LogicalVolume*>> plates_;
  std::vector<G4LogicalVolume*> sensor_lvs_, absorber_lvs_;
};

// Absorber energy, and what leaves the calorimeter: killed at its surface and counted.
class AbsorberBookkeeping : public G4UserSteppingAction {
 public:
  AbsorberBookkeeping(Tally* tally, const Calorimeter* calo) : tally_(tally), calo_(calo) {}

  void UserSteppingAction(const G4Step* step) override {
    const G4VPhysicalVolume* here = step->GetPreStepPoint()->GetPhysicalVolume();
    const G4VPhysicalVolume* world = calo_->world();
    if (here == world) return;  // the gun's first step, in front of the face
    const G4double e = step->GetTotalEnergyDeposit();
    if (e > 0 && here != nullptr) {
      const G4LogicalVolume* lv = here->GetLogicalVolume();
      const auto& abs = calo_->absorbers();
      if (std::find(abs.begin(), abs.end(), lv) != abs.end()) tally_->absorber += e;
    }
    const G4VPhysicalVolume* next = step->GetPostStepPoint()->GetPhysicalVolume();
    if (next == nullptr || next == world) {
      G4Track* track = step->GetTrack();
      G4double lost = track->GetKineticEnergy();
      // An escaping positron also takes the two electron masses its annihilation would
      // have given back.
      if (track->GetDefinition() == G4Positron::Positron()) lost += 2 * electron_mass_c2;
      tally_->leakage += lost;
      track->SetTrackStatus(fStopAndKill);
    }
  }

 private:
  Tally* tally_;
  const Calorimeter* calo_;
};

// --- primaries --------------------------------------------------------------------------------
// One batch of showers: the gun's settings and each event's seeds, set before BeamOn.
struct Batch {
  int n = 0;
  const double* energy = nullptr;     // GeV
  const double* position = nullptr;   // (n, 3) mm
  const double* direction = nullptr;  // (n, 3)
  const long* seeds = nullptr;        // (n, 4) 32-bit values
};

class Gun : public G4VUserPrimaryGeneratorAction {
 public:
  Gun(const Batch* batch) : batch_(batch), gun_(1) {}

  void set_particle(G4ParticleDefinition* p) { gun_.SetParticleDefinition(p); }

  void GeneratePrimaries(G4Event* event) override {
    const int i = event->GetEventID();
    // Each event's random stream depends only on its own seeds, so a shower is the same
    // whichever process, batch or run makes it.
    CLHEP::HepRandom::getTheEngine()->setSeeds(batch_->seeds + 4 * i, 4);
    const double* p = batch_->position + 3 * i;
    const double* d = batch_->direction + 3 * i;
    gun_.SetParticleEnergy(batch_->energy[i] * GeV);
    gun_.SetParticlePosition(G4ThreeVector(p[0] * mm, p[1] * mm, p[2] * mm));
    gun_.SetParticleMomentumDirection(G4ThreeVector(d[0], d[1], d[2]));
    gun_.GeneratePrimaryVertex(event);
  }

 private:
  const Batch* batch_;
  G4ParticleGun gun_;
};

// --- the application --------------------------------------------------------------------------
struct Output {
  float* cells = nullptr;       // (n, cells per shower) GeV
  double* bookkeeping = nullptr;  // (n, 3): sensor, absorber, leakage, GeV
  const double* offsets = nullptr;  // (n, 2) mm added to image coordinates
};

class Fill : public G4UserEventAction {
 public:
  Fill(const Config& config, Tally* tally, Output* out)
      : config_(config), tally_(tally), out_(out) {}

  void BeginOfEventAction(const G4Event*) override { tally_->clear(); }

  void EndOfEventAction(const G4Event* event) override {
    const int i = event->GetEventID();
    const int n_layers = int(config_.sensor.size());
    const int planes = config_.summed ? 1 : n_layers;
    const size_t per_shower = size_t(config_.nx) * config_.ny * planes;
    float* cells = out_->cells + i * per_shower;
    double cx = out_->offsets[2 * i], cy = out_->offsets[2 * i + 1];
    if (config_.barycentre && tally_->sensor > 0) {
      cx -= tally_->sum_ex / tally_->sensor;
      cy -= tally_->sum_ey / tally_->sensor;
    }
    const double half_x = 0.5 * config_.nx, half_y = 0.5 * config_.ny;
    for (const Deposit& h : tally_->sensor_hits) {
      const long ix = long(std::floor((h.x + cx) / config_.cell_x_mm + half_x));
      const long iy = long(std::floor((h.y + cy) / config_.cell_y_mm + half_y));
      if (ix < 0 || ix >= config_.nx || iy < 0 || iy >= config_.ny) continue;
      const size_t cell = config_.summed ? size_t(ix) * config_.ny + iy
                                         : (size_t(ix) * config_.ny + iy) * n_layers + h.layer;
      cells[cell] += h.energy / 1000.0f;  // MeV -> GeV
    }
    double* book = out_->bookkeeping + 3 * i;
    book[0] = tally_->sensor / GeV;
    book[1] = tally_->absorber / GeV;
    book[2] = tally_->leakage / GeV;
  }

 private:
  const Config& config_;
  Tally* tally_;
  Output* out_;
};

struct App {
  Config config;
  Tally tally;
  Batch batch;
  Output output;
  QuietSession session;
  ThrowingHandler* handler = nullptr;
  G4RunManager* run = nullptr;
  Gun* gun = nullptr;
};

App* the_app = nullptr;

void copy_message(const std::string& text, char* buffer, size_t size) {
  if (buffer == nullptr || size == 0) return;
  std::snprintf(buffer, size, "%s", text.c_str());
}

std::string with_geant4_errors(const std::string& what) {
  std::string text = what;
  if (the_app != nullptr && !the_app->session.errors.empty()) {
    text += "\nGeant4 said: " + the_app->session.errors;
  }
  return text;
}

}  // namespace

// --- C API ------------------------------------------------------------------------------------
extern "C" {

int cf_geant4_version() { return G4VERSION_NUMBER; }

// Build the calorimeter and the physics and initialise Geant4. Once per process.
// Returns 0, or 1 with a message in `error`.
int cf_init(int n_layers, const char** absorber, const double* absorber_mm, const char** sensor,
            const double* sensor_mm, int nx, int ny, double cell_x_mm, double cell_y_mm,
            int summed, int barycentre, double half_width_mm, double range_cut_mm,
            const char* physics, char* error, size_t error_size) {
  if (the_app != nullptr) {
    copy_message("Geant4 is already initialised in this process", error, error_size);
    return 1;
  }
  try {
    the_app = new App();
    Config& c = the_app->config;
    for (int i = 0; i < n_layers; ++i) {
      c.absorber.emplace_back(absorber[i]);
      c.absorber_mm.push_back(absorber_mm[i]);
      c.sensor.emplace_back(sensor[i]);
      c.sensor_mm.push_back(sensor_mm[i]);
    }
    c.nx = nx;
    c.ny = ny;
    c.cell_x_mm = cell_x_mm;
    c.cell_y_mm = cell_y_mm;
    c.summed = summed != 0;
    c.barycentre = barycentre != 0;
    c.half_width_mm = half_width_mm;
    c.range_cut_mm = range_cut_mm;
    c.physics = physics;

    G4UImanager::GetUIpointer()->SetCoutDestination(&the_app->session);
    the_app->handler = new ThrowingHandler();  // registers itself with G4StateManager
    CLHEP::HepRandom::setTheEngine(new CLHEP::MixMaxRng());

    the_app->run = new G4RunManager();
    the_app->run->SetVerboseLevel(0);
    auto* calo = new Calorimeter(c, &the_app->tally);
    G4VModularPhysicsList* list = make_physics(c.physics);
    list->SetDefaultCutValue(c.range_cut_mm * mm);
    the_app->run->SetUserInitialization(calo);
    the_app->run->SetUserInitialization(list);
    the_app->gun = new Gun(&the_app->batch);
    the_app->run->SetUserAction(the_app->gun);
    the_app->run->SetUserAction(new Fill(c, &the_app->tally, &the_app->output));
    the_app->run->SetUserAction(new AbsorberBookkeeping(&the_app->tally, calo));
    the_app->run->Initialize();
    // Build the physics tables now, not in the first batch (its time would count there).
    the_app->run->RunInitialization();
    the_app->run->RunTermination();
    return 0;
  } catch (const std::exception& exc) {
    copy_message(with_geant4_errors(exc.what()), error, error_size);
    return 1;
  }
}

// Simulate n showers. particle: "e-", "e+", "gamma". cells must hold n * nx * ny * planes
// zeros; bookkeeping n * 3 doubles. Returns 0, or 1 with a message in `error`.
int cf_simulate(int n, const char* particle, const double* energy, const double* position,
                const double* direction, const double* offsets, const long* seeds, float* cells,
                double* bookkeeping, char* error, size_t error_size) {
  if (the_app == nullptr) {
    copy_message("Geant4 is not initialised (call cf_init first)", error, error_size);
    return 1;
  }
  try {
    G4ParticleDefinition* def = G4ParticleTable::GetParticleTable()->FindParticle(particle);
    if (def == nullptr) throw std::invalid_argument(std::string("unknown particle ") + particle);
    the_app->gun->set_particle(def);
    the_app->batch = {n, energy, position, direction, seeds};
    the_app->output = {cells, bookkeeping, offsets};
    the_app->session.errors.clear();
    the_app->run->BeamOn(n);
    return 0;
  } catch (const std::exception& exc) {
    copy_message(with_geant4_errors(exc.what()), error, error_size);
    return 1;
  }
}

}  // extern "C"

#ifdef CF_BENCH_MAIN
// The bare event loop: clic-25's layers, electrons along z at one energy, no Python.
// Usage: app ENERGY_GEV N [PHYSICS]; prints "showers_per_s <value>".
#include <chrono>
int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s ENERGY_GEV N [PHYSICS]\n", argv[0]);
    return 2;
  }
  const double e = std::atof(argv[1]);
  const int n = std::atoi(argv[2]);
  const char* physics = argc > 3 ? argv[3] : "data-free";
  std::vector<const char*> absorber(25, "G4_W"), sensor(25, "G4_Si");
  std::vector<double> absorber_mm(25, 2.4), sensor_mm(25, 0.5);
  for (int i = 17; i < 25; ++i) absorber_mm[i] = 4.8;
  char error[4096];
  if (cf_init(25, absorber.data(), absorber_mm.data(), sensor.data(), sensor_mm.data(), 25, 25,
              5.1, 5.1, 0, 0, 1000.0, 0.7, physics, error, sizeof error) != 0) {
    std::fprintf(stderr, "%s\n", error);
    return 1;
  }
  std::vector<double> energy(n, e), position(3 * n, 0.0), direction(3 * n, 0.0), offsets(2 * n);
  std::vector<long> seeds(4 * n);
  for (int i = 0; i < n; ++i) {
    position[3 * i + 2] = -1e-3;
    direction[3 * i + 2] = 1.0;
    seeds[4 * i] = 12345;
    seeds[4 * i + 1] = i;
  }
  std::vector<float> cells(size_t(n) * 25 * 25 * 25);
  std::vector<double> book(3 * n);
  const auto start = std::chrono::steady_clock::now();
  if (cf_simulate(n, "e-", energy.data(), position.data(), direction.data(), offsets.data(),
                  seeds.data(), cells.data(), book.data(), error, sizeof error) != 0) {
    std::fprintf(stderr, "%s\n", error);
    return 1;
  }
  const double s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("showers_per_s %.4f\n", n / s);
  return 0;
}
#endif

// TensorRT IPluginV3 plugin "MaskedQueryGather" (namespace "s3rt", version "1"): see the header.

#include "masked_query_gather_plugin.h"

#include "masked_query_gather.h"

#include <cstdio>
#include <cstring>
#include <exception>
#include <new>

using namespace nvinfer1;

namespace
{

ILoggerFinder* gLoggerFinder{nullptr};

void logError(char const* message) noexcept
{
    ILogger* logger = gLoggerFinder != nullptr ? gLoggerFinder->findLogger() : nullptr;
    if (logger != nullptr)
    {
        logger->log(ILogger::Severity::kERROR, message);
    }
    else
    {
        std::fprintf(stderr, "[s3rt MaskedQueryGather] %s\n", message);
    }
}

constexpr int32_t kNbInputs = 3;  // pixel, query_key, foreground
constexpr int32_t kNbOutputs = 2; // gathered, index

bool isFloatType(DataType type)
{
    return type == DataType::kFLOAT || type == DataType::kHALF;
}

} // namespace

namespace s3rt
{
namespace plugin
{

// ------------------------------------------------------------------------------------------------
// MaskedQueryGatherPlugin
// ------------------------------------------------------------------------------------------------

MaskedQueryGatherPlugin::MaskedQueryGatherPlugin(int32_t numHeads)
    : mNumHeads(numHeads)
    , mMetadata("num_heads=" + std::to_string(numHeads))
{
    bindFields();
}

MaskedQueryGatherPlugin::MaskedQueryGatherPlugin(MaskedQueryGatherPlugin const& other)
    : IPluginV3(other)
    , IPluginV3OneCore(other)
    , IPluginV3OneBuild(other)
    , IPluginV3OneRuntime(other)
    , mNumHeads(other.mNumHeads)
    , mMetadata(other.mMetadata)
{
    bindFields(); // the field must point at this object's member, not the other's
}

void MaskedQueryGatherPlugin::bindFields()
{
    mFields.clear();
    mFields.emplace_back("num_heads", &mNumHeads, PluginFieldType::kINT32, 1);
    mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
    mFieldCollection.fields = mFields.data();
}

IPluginCapability* MaskedQueryGatherPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

IPluginV3* MaskedQueryGatherPlugin::clone() noexcept
{
    try
    {
        return new MaskedQueryGatherPlugin(*this);
    }
    catch (std::exception const& e)
    {
        logError(e.what());
    }
    return nullptr;
}

char const* MaskedQueryGatherPlugin::getPluginName() const noexcept
{
    return kMQG_PLUGIN_NAME;
}

char const* MaskedQueryGatherPlugin::getPluginVersion() const noexcept
{
    return kMQG_PLUGIN_VERSION;
}

char const* MaskedQueryGatherPlugin::getPluginNamespace() const noexcept
{
    return kMQG_PLUGIN_NAMESPACE;
}

int32_t MaskedQueryGatherPlugin::getNbOutputs() const noexcept
{
    return kNbOutputs;
}

int32_t MaskedQueryGatherPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs)
    {
        logError("expected 3 inputs (pixel, query_key, foreground) and 2 outputs (gathered, index)");
        return -1;
    }
    if (in[0].desc.dims.nbDims != 3 || in[1].desc.dims.nbDims != 3 || in[2].desc.dims.nbDims != 2)
    {
        logError("expected pixel (BN, P, C), query_key (BN, Q, C), foreground (BN, P)");
        return -1;
    }
    int64_t const channels = in[0].desc.dims.d[2];
    if (channels != -1 && !s3rt_mqg_is_supported(channels, mNumHeads, 1))
    {
        logError("unsupported sizes: the kernel needs C == 256 and num_heads in {1, 2, 4, 8, 16, 32}");
        return -1;
    }
    (void) out;
    return 0;
}

int32_t MaskedQueryGatherPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs || !isFloatType(inputTypes[0]))
    {
        return -1;
    }
    outputTypes[0] = inputTypes[0]; // gathered: dtype of pixel
    outputTypes[1] = DataType::kINT32;
    return 0;
}

int32_t MaskedQueryGatherPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
    DimsExprs const* shapeInputs, int32_t nbShapeInputs, DimsExprs* outputs, int32_t nbOutputs,
    IExprBuilder& exprBuilder) noexcept
{
    (void) shapeInputs;
    (void) nbShapeInputs;
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs || inputs[0].nbDims != 3 || inputs[1].nbDims != 3
        || inputs[2].nbDims != 2)
    {
        return -1;
    }
    // gathered (BN, Q, C)
    outputs[0].nbDims = 3;
    outputs[0].d[0] = inputs[0].d[0];
    outputs[0].d[1] = inputs[1].d[1];
    outputs[0].d[2] = inputs[0].d[2];
    // index (BN, H, Q)
    outputs[1].nbDims = 3;
    outputs[1].d[0] = inputs[0].d[0];
    outputs[1].d[1] = exprBuilder.constant(mNumHeads);
    outputs[1].d[2] = inputs[1].d[1];
    return 0;
}

bool MaskedQueryGatherPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs || pos < 0 || pos >= kNbInputs + kNbOutputs)
    {
        return false;
    }
    PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != TensorFormat::kLINEAR)
    {
        return false;
    }
    switch (pos)
    {
    case 0: return isFloatType(desc.type);         // pixel
    case 1:                                        // query_key
    case 3: return desc.type == inOut[0].desc.type; // gathered
    case 2:                                        // foreground
    case 4: return desc.type == DataType::kINT32;  // index
    default: return false;
    }
}

size_t MaskedQueryGatherPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept
{
    (void) outputs;
    (void) nbOutputs;
    if (nbInputs != kNbInputs)
    {
        return 0;
    }
    // upper bound over the profile: one 64-bit argmax key per (bn, head, query)
    return s3rt_mqg_workspace_size(inputs[0].max.d[0], mNumHeads, inputs[1].max.d[1]);
}

char const* MaskedQueryGatherPlugin::getMetadataString() noexcept
{
    return mMetadata.c_str();
}

int32_t MaskedQueryGatherPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    (void) out;
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs)
    {
        return -1;
    }
    Dims const& pixel = in[0].dims;
    Dims const& queryKey = in[1].dims;
    Dims const& foreground = in[2].dims;
    bool const consistent = pixel.nbDims == 3 && queryKey.nbDims == 3 && foreground.nbDims == 2
        && queryKey.d[0] == pixel.d[0] && queryKey.d[2] == pixel.d[2] && foreground.d[0] == pixel.d[0]
        && foreground.d[1] == pixel.d[1];
    if (!consistent)
    {
        logError("inconsistent shapes: expected pixel (BN, P, C), query_key (BN, Q, C), foreground (BN, P)");
        return -1;
    }
    if (!s3rt_mqg_is_supported(pixel.d[2], mNumHeads, queryKey.d[1] > 0 ? queryKey.d[1] : 1))
    {
        logError("unsupported sizes: the kernel needs C == 256 and num_heads in {1, 2, 4, 8, 16, 32}");
        return -1;
    }
    return 0;
}

int32_t MaskedQueryGatherPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    (void) outputDesc;
    Dims const& pixel = inputDesc[0].dims;
    int64_t const batchObjects = pixel.d[0];
    int64_t const numPixels = pixel.d[1];
    int64_t const channels = pixel.d[2];
    int64_t const numQueries = inputDesc[1].dims.d[1];
    s3rt_mqg_dtype const dtype = inputDesc[0].type == DataType::kHALF ? S3RT_MQG_FLOAT16 : S3RT_MQG_FLOAT32;
    size_t const workspaceBytes = s3rt_mqg_workspace_size(batchObjects, mNumHeads, numQueries);

    int const status = s3rt_masked_query_gather(inputs[0], inputs[1], inputs[2], outputs[0], outputs[1], workspace,
        workspaceBytes, batchObjects, numPixels, numQueries, channels, mNumHeads, dtype, S3RT_MQG_MASK_INT32,
        S3RT_MQG_INDEX_INT32, stream);
    if (status != S3RT_MQG_SUCCESS)
    {
        // the status is the kernel's own code (see masked_query_gather.h); TensorRT only needs non-zero
        logError(s3rt_mqg_status_string(status));
        return -1;
    }
    return 0;
}

IPluginV3* MaskedQueryGatherPlugin::attachToContext(IPluginResourceContext* context) noexcept
{
    (void) context; // no per-context resources
    return clone();
}

PluginFieldCollection const* MaskedQueryGatherPlugin::getFieldsToSerialize() noexcept
{
    return &mFieldCollection;
}

// ------------------------------------------------------------------------------------------------
// MaskedQueryGatherPluginCreator
// ------------------------------------------------------------------------------------------------

MaskedQueryGatherPluginCreator::MaskedQueryGatherPluginCreator()
{
    mFieldNames.emplace_back("num_heads", nullptr, PluginFieldType::kINT32, 1);
    mFieldCollection.nbFields = static_cast<int32_t>(mFieldNames.size());
    mFieldCollection.fields = mFieldNames.data();
}

IPluginV3* MaskedQueryGatherPluginCreator::createPlugin(
    char const* name, PluginFieldCollection const* fc, TensorRTPhase phase) noexcept
{
    (void) name;
    (void) phase; // the same fields at build and at runtime (getFieldsToSerialize)
    try
    {
        int64_t numHeads = -1;
        for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
        {
            PluginField const& field = fc->fields[i];
            if (field.name == nullptr || std::strcmp(field.name, "num_heads") != 0 || field.data == nullptr
                || field.length < 1)
            {
                continue;
            }
            switch (field.type)
            {
            case PluginFieldType::kINT32: numHeads = *static_cast<int32_t const*>(field.data); break;
            case PluginFieldType::kINT64: numHeads = *static_cast<int64_t const*>(field.data); break;
            case PluginFieldType::kINT16: numHeads = *static_cast<int16_t const*>(field.data); break;
            case PluginFieldType::kINT8: numHeads = *static_cast<int8_t const*>(field.data); break;
            default: break;
            }
        }
        if (!s3rt_mqg_is_supported(S3RT_MQG_CHANNELS, numHeads, 1))
        {
            logError("field num_heads missing or unsupported: expected an integer in {1, 2, 4, 8, 16, 32}");
            return nullptr;
        }
        return new MaskedQueryGatherPlugin(static_cast<int32_t>(numHeads));
    }
    catch (std::exception const& e)
    {
        logError(e.what());
    }
    return nullptr;
}

PluginFieldCollection const* MaskedQueryGatherPluginCreator::getFieldNames() noexcept
{
    return &mFieldCollection;
}

char const* MaskedQueryGatherPluginCreator::getPluginName() const noexcept
{
    return kMQG_PLUGIN_NAME;
}

char const* MaskedQueryGatherPluginCreator::getPluginVersion() const noexcept
{
    return kMQG_PLUGIN_VERSION;
}

char const* MaskedQueryGatherPluginCreator::getPluginNamespace() const noexcept
{
    return kMQG_PLUGIN_NAMESPACE;
}

} // namespace plugin
} // namespace s3rt

// ------------------------------------------------------------------------------------------------
// library entry points
// ------------------------------------------------------------------------------------------------

namespace
{
s3rt::plugin::MaskedQueryGatherPluginCreator& creatorInstance()
{
    static s3rt::plugin::MaskedQueryGatherPluginCreator creator;
    return creator;
}
} // namespace

extern "C" void setLoggerFinder(ILoggerFinder* finder)
{
    gLoggerFinder = finder;
}

extern "C" IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static IPluginCreatorInterface* const creators[] = {&creatorInstance()};
    nbCreators = 1;
    return creators;
}

extern "C" int32_t s3rt_register_trt_plugins()
{
    static bool const registered
        = getPluginRegistry()->registerCreator(creatorInstance(), s3rt::plugin::kMQG_PLUGIN_NAMESPACE);
    return registered ? 1 : 0;
}

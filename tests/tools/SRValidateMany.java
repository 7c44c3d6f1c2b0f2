// Validates several DICOM SR files with PixelMed's DicomSRValidator in one JVM, so its
// stylesheets are compiled once. Run through Java's single-file source launcher by
// pixelmed-srvalidate (beside this file); written for this project.
import com.pixelmed.validate.DicomSRValidator;

public class SRValidateMany {
    public static void main(String[] args) throws Exception {
        DicomSRValidator validator = new DicomSRValidator();
        for (String path : args) {
            System.out.println("==== FILE " + path);
            try {
                System.out.println(validator.validate(path));
            } catch (Exception e) {
                System.out.println("Error: the validator failed on this file: " + e);
            }
            System.out.println("==== END " + path);
        }
    }
}
